"""A damaged base-reference cache never yields a number: each kind of damage is detected, the reference is moved
aside (never deleted) and rebuilt, and the run's numbers equal those of an undamaged cache."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from hemorrhage_core.errors import CacheError
from hemorrhage_core.probes.reference import remove_stale_builds
from hemorrhage_core.specs import ProbeSettings, QuantizeRTN, RunSpec

WORDS = ["river", "sea", "town", "news", "day", "old", "leaves", "quick", "fox"]


@pytest.fixture
def setup(tiny_llama_dir, runner, word_text, tmp_path):
    text = word_text(WORDS, 900)
    probe = ProbeSettings(corpus=text, tokens=192, window=32, batch_size=2, attn_len=16)
    spec = RunSpec(model=str(tiny_llama_dir), mods=(QuantizeRTN(bits=5),), probe=probe)
    expected = runner.run(spec).metrics
    (ref,) = [p for p in (tmp_path / "cache" / "reference").iterdir() if p.is_dir()]
    return runner, spec, expected, ref


def _rerun(runner, spec):
    """The same spec measured again from scratch in a fresh runner (a new process would do the same)."""
    from hemorrhage_core.runner import Runner

    runner.store.delete_runs([runner.cache_key(spec)[0]])
    return Runner(runner.store, device="cpu").run(spec).metrics


def _tamper_values(ref: Path) -> None:
    path = ref / "batch_00000.safetensors"
    tensors = load_file(path)
    for name in ("hidden", "top_lp"):
        t = tensors[name].clone()
        flat = t.view(-1)
        flat[: flat.numel() // 4] = 0.5  # other finite numbers, a valid file
        tensors[name] = t
    save_file(tensors, str(path))


def _truncate(ref: Path) -> None:
    path = ref / "batch_00001.safetensors"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flip_bytes(ref: Path) -> None:
    path = ref / "batch_00000.safetensors"
    data = bytearray(path.read_bytes())
    for i in range(len(data) - 64, len(data) - 32):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def _other_window(ref: Path) -> None:
    shutil.copy(ref / "batch_00001.safetensors", ref / "batch_00000.safetensors")


DAMAGE = {
    "tampered values": _tamper_values,
    "truncated batch": _truncate,
    "flipped bytes": _flip_bytes,
    "batch from another window": _other_window,
    "deleted attention file": lambda ref: (ref / "attention.safetensors").unlink(),
    "invalid meta.json": lambda ref: (ref / "meta.json").write_text("{not json"),
    "missing meta.json": lambda ref: (ref / "meta.json").unlink(),
    "meta.json without checksums": lambda ref: (ref / "meta.json").write_text(
        json.dumps({k: v for k, v in json.loads((ref / "meta.json").read_text()).items() if k != "files"})
    ),
}


@pytest.mark.parametrize("damage", list(DAMAGE), ids=list(DAMAGE))
def test_damage_is_detected_moved_aside_and_rebuilt_with_identical_numbers(setup, damage):
    runner, spec, expected, ref = setup
    DAMAGE[damage](ref)
    again = _rerun(runner, spec)
    for key in ("kl_mean", "ppl_base", "ppl", "top1_agreement", "last_layer_rel_error", "attn_js_mean"):
        assert again[key] == expected[key], key
    aside = [p for p in ref.parent.iterdir() if p.name.startswith(ref.name + ".damaged-")]
    assert len(aside) == 1, "the damaged reference is kept, never deleted"
    assert (ref / "meta.json").is_file()  # rebuilt in place


def test_a_file_changed_while_a_profile_reads_it_stores_nothing(setup, monkeypatch):
    runner, spec, _, ref = setup
    from hemorrhage_core.probes import reference as reference_mod
    from hemorrhage_core.runner import Runner

    fresh = Runner(runner.store, device="cpu")
    changed = spec.with_mods(QuantizeRTN(bits=3))
    fresh.reference(changed)  # opened and fully checked
    _tamper_values(ref)  # ... then edited before the profile reads it
    monkeypatch.setattr(reference_mod, "open_reference", lambda path: pytest.fail("not reopened"))
    with pytest.raises(CacheError, match="damaged.*Nothing was stored"):
        fresh.run(changed)
    assert fresh.lookup(changed) is None
    assert any(p.name.startswith(ref.name + ".damaged-") for p in ref.parent.iterdir())


def test_temporary_folders_of_killed_builds_are_removed(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f"abc.build-{dead.pid}-x1.tmp"
    live = tmp_path / f"abc.build-{os.getpid()}-x2.tmp"  # a build in progress in a running process
    for folder in (stale, live):
        folder.mkdir()
        (folder / "batch_00000.safetensors").write_bytes(b"x" * 10)
    remove_stale_builds(tmp_path)
    assert not stale.exists() and live.exists()


def test_a_killed_reference_build_leaves_nothing_that_is_used(tiny_llama_dir, word_text, tmp_path):
    """kill -9 in the middle of a reference build: the next build cleans the temporary folder up."""
    text = word_text(WORDS, 3000)
    env = {**os.environ, "HEMLAB_CACHE": str(tmp_path / "cache"), "HEMLAB_DATA": str(tmp_path)}
    script = (
        "from hemorrhage_core.runner import Runner; from hemorrhage_core.store import Store;"
        "from hemorrhage_core.specs import RunSpec, ProbeSettings;"
        f"r = Runner(Store({str(tmp_path / 'k.duckdb')!r}), device='cpu');"
        f"r.run(RunSpec(model={str(tiny_llama_dir)!r}, probe=ProbeSettings(corpus={text!r}, tokens=4096, "
        "window=32, batch_size=1, attn_len=16)))"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], env=env)
    refs = tmp_path / "cache" / "reference"
    deadline = time.time() + 120
    while time.time() < deadline and not any(refs.glob("*.build-*.tmp/batch_00003.safetensors")):
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    assert list(refs.glob("*.build-*.tmp")), "the build was killed mid-way"
    assert not [p for p in refs.iterdir() if not p.name.endswith(".tmp")], "no reference appears"
    remove_stale_builds(refs)
    assert not list(refs.iterdir())
    torch.manual_seed(0)
