"""Where and in what precision a model runs, and whether its weights fit in the memory available."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import psutil
import torch

from ..errors import ModelError
from .catalogue import _embedded_list

log = logging.getLogger(__name__)

_MEMORY_FRACTION = 0.8


def resolve_device(device: str | None = None) -> tuple[torch.device, torch.dtype]:
    """Pick where and in what precision to run.

    ``None``: CUDA with bfloat16 (float16 when the GPU lacks bf16) if a GPU is visible, else CPU with float32.
    An explicit device string is honoured: ``"cpu"`` gives float32, ``"cuda"``/``"cuda:N"`` a half dtype
    (ModelError when no GPU is visible), anything else float32.
    """
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ModelError(f"Device {device!r} was asked for but no CUDA GPU is visible; use 'cpu'.")
        return dev, torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return dev, torch.float32


def resolve_dtype(device: str | None = None, dtype: torch.dtype | str | None = None) -> torch.dtype:
    """The precision `load_model(device=device, dtype=dtype)` loads in, decided without loading anything."""
    return _as_dtype(dtype) or resolve_device(device)[1]


def _as_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    value = getattr(torch, str(dtype).removeprefix("torch."), None)
    if not isinstance(value, torch.dtype):
        raise ModelError(f"Unknown dtype {dtype!r}; use float32, bfloat16 or float16.")
    return value


def _available_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    return psutil.virtual_memory().available


def _estimate_bytes(config: Any, folder: Path | None, dtype: torch.dtype) -> int | None:
    """Bytes the weights will take in ``dtype``: exact parameter count from a meta-device build of the config,
    else the weight files' size (assumed stored in the same precision), else None (unknown)."""
    from transformers import AutoModelForCausalLM

    try:
        with torch.device("meta"):
            shell = AutoModelForCausalLM.from_config(config)
        return sum(p.numel() for p in shell.parameters()) * dtype.itemsize
    except Exception as exc:  # custom architectures may not build from a config alone
        log.debug("Could not count parameters from the config (%s); using file sizes", exc)
    if folder is not None:
        files = [folder] if folder.is_file() else [*folder.glob("*.safetensors"), *folder.glob("*.bin")]
        return sum(f.stat().st_size for f in files) or None
    return None


def _check_memory(source: str, config: Any, folder: Path | None, device: torch.device, dtype) -> None:
    need = _estimate_bytes(config, folder, dtype)
    if need is None:
        return
    free = _available_bytes(device)
    if need > _MEMORY_FRACTION * free:
        raise ModelError(
            f"{source} is too big for this machine: its weights need about {need / 2**30:.2f} GiB in {dtype} "
            f"but only {free / 2**30:.2f} GiB of {device.type} memory is available (limit "
            f"{_MEMORY_FRACTION:.0%}). Try a smaller model ({_embedded_list()}) or a half-precision dtype."
        )


def _placement(source: str, config: Any, folder: Path | None, dtype, device_map: str) -> dict[str, Any]:
    """from_pretrained's placement arguments for `device_map` ("auto"), planned before loading."""
    from ..placement import free_memory, plan_placement

    if device_map != "auto":
        raise ModelError(f"--device-map takes 'auto', got {device_map!r}")
    need = _estimate_bytes(config, folder, dtype)
    if need is None:
        log.warning("%s: weight size unknown, so accelerate places it without a plan", source)
        return {"device_map": "auto"}
    try:
        plan = plan_placement(need, free_memory(), fraction=_MEMORY_FRACTION)
    except ModelError as exc:
        raise ModelError(f"{source} cannot be placed in {dtype}: {exc}") from None
    log.info("%s placement: %s", source, plan.describe())
    return {"device_map": "auto", "max_memory": plan.max_memory()}
