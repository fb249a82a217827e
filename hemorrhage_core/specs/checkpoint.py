"""Bring your own modified checkpoint: another copy of the model, measured against the original. No torch here.

`hemlab run --model ORIGINAL --against MODIFIED` profiles MODIFIED (a community quantization, a pruned or
fine-tuned copy, a GGUF file) with the same metrics as any modification, llama.cpp's `--kl-divergence` workflow
for any transformers checkpoint. Build the spec with `hemorrhage_core.identity.against_spec(source)`, which
records the identity of the checkpoint's files: rewriting them changes the cache key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .base import Modification, check, modification, option
from .families import Family, register_family

register_family(
    Family(
        "checkpoint",
        "Checkpoint",
        "compare_arrows",
        "#E377C2",
        -1,
        False,
        "Another checkpoint of the model (a community quantization, a pruned or fine-tuned copy) measured "
        "against the original; on the Model page.",
    )
)


@modification("checkpoint")
@dataclass(frozen=True)
class Against(Modification):
    """Another checkpoint with the original's tokenizer (folder, hub id or .gguf file), measured against it.

    The checkpoint replaces the model: it must come first in a chain, and what follows modifies it (e.g. a
    decoding change on top of a community quantization). Its blocks are compared with the original's one to one
    when both have as many blocks of the same width; otherwise the per-layer metrics are left out.
    """

    family: ClassVar[str] = "checkpoint"
    replaces_model: ClassVar[bool] = True

    source: str = option(
        "", help="a model folder, a .gguf file (absolute paths), a hub id or an embedded name"
    )
    identity: str = option(
        "",
        help="the identity of the checkpoint's files when the spec was made (`hemlab run --against` computes it)",
    )

    def validate(self) -> None:
        check(
            bool(self.source.strip()),
            "checkpoint needs source=PATH_OR_HUB_ID: a model folder, a .gguf file or a hub id",
        )
        check(
            bool(self.identity),
            "checkpoint needs the identity of the checkpoint's files: use `hemlab run --against PATH` "
            "(or identity.against_spec in Python), which computes it",
        )

    def label(self) -> str:
        return "checkpoint " + self.source.rstrip("/").replace("\\", "/").rsplit("/", 1)[-1]
