"""How the tests measure tiny models: the probe settings sized for them and the spec helper (shared by the
integration tests; the corpus is conftest's `text_file`)."""

from __future__ import annotations

from hemorrhage_core.specs import Modification, ProbeSettings, RunSpec

# 4 windows of 64 tokens, a 2 x 16-token attention probe set and a top-64 reference: seconds per run.
TINY_PROBE = dict(tokens=256, window=64, batch_size=2, attn_probes=2, attn_len=16, top_k=64)


def tiny_spec(model, corpus: str, *mods: Modification, **probe) -> RunSpec:
    """`model` (a folder or name) with `mods`, measured on `corpus` with TINY_PROBE (`probe` overrides it)."""
    return RunSpec(
        model=str(model), mods=tuple(mods), probe=ProbeSettings(corpus=corpus, **(TINY_PROBE | probe))
    )
