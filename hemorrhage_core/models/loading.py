"""Loading any causal LM for an experiment: an embedded name, a local folder, a .gguf file or a hub id.

``load_model`` returns a ``LoadedModel``: the model in eval mode with gradients off, its tokenizer, and what the
rest of the project needs to know about it (device, dtype, parameter count, a fingerprint for cache keys, its
blocks). ``model_info`` summarises one for the UI, the CLI and stored run metadata.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch

from .. import structure
from ..errors import ModelError
from .catalogue import EMBEDDED, _embedded_list
from .devices import _as_dtype, _check_memory, _placement, resolve_device
from .embedded import prepare_embedded

log = logging.getLogger(__name__)

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass
class LoadedModel:
    """A causal LM ready for measurement (eval mode, no gradients) plus what callers need to know about it.

    ``fingerprint`` identifies the weights for cache keys. It is cheap by design (no hashing of weight bytes):
    sha256 over config.json and each weight file's name, size and mtime for folders (so it changes whenever the
    weights are rewritten), over the path, size and mtime of a GGUF file, or over the hub id, revision and config
    for hub models.
    """

    name: str
    model: Any  # transformers PreTrainedModel
    tokenizer: Any  # transformers tokenizer, with a pad token
    device: torch.device
    dtype: torch.dtype
    source: str
    n_params: int
    fingerprint: str
    check: Any = None  # probes.selfcheck.SelfCheck, set when the runner prepares the model for measurement

    @property
    def config(self) -> Any:
        """The text config (for multimodal wrappers, the language model's)."""
        return self.model.config.get_text_config()

    @property
    def layers(self) -> torch.nn.ModuleList:
        """The transformer blocks in order (the live ``nn.ModuleList``: editing it edits the model)."""
        return structure.find_blocks(self.model)

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def num_heads(self) -> int:
        return structure.head_counts(self.model).heads


def _folder_fingerprint(folder: Path) -> str:
    digest = hashlib.sha256((folder / "config.json").read_bytes())
    for f in sorted([*folder.glob("*.safetensors"), *folder.glob("*.bin")]):
        st = f.stat()
        digest.update(f"{f.name}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _hub_reachable() -> bool:
    """A 3-second TCP check, so an offline machine fails at once instead of after ~25 s of retries."""
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        with socket.create_connection((url.hostname, url.port or 443), timeout=3):
            return True
    except OSError:
        return False


def _check_safetensors(folder: Path) -> None:
    """ModelError naming the file for a truncated, empty or foreign .safetensors file (its header is read only)."""
    from safetensors import safe_open

    for file in sorted(folder.glob("*.safetensors")):
        try:
            with safe_open(str(file), framework="pt") as handle:
                handle.keys()
        except (
            Exception
        ) as exc:  # safetensors raises its own SafetensorError (and OSError for unreadable files)
            raise ModelError(
                f"{file} is not a readable safetensors file ({exc}): it is truncated, empty or damaged. "
                "Save or download the model again."
            ) from exc


def _resolve_source(name_or_path: str, allow_pickle: bool = False) -> tuple[str, Path | None, dict[str, Any]]:
    """Map a user's model argument to (what from_pretrained loads, local folder or None, extra kwargs).

    Weights are read with safetensors; pickled weights (pytorch_model.bin) only with `allow_pickle`, because
    unpickling runs code from the file."""
    if name_or_path in EMBEDDED:
        folder = prepare_embedded(name_or_path)
        return str(folder), folder, {"use_safetensors": True}
    path = Path(name_or_path).expanduser()
    if path.is_file() and path.suffix.lower() == ".gguf":
        # transformers reads a GGUF file as (its folder, its name), config and tokenizer from its metadata.
        return str(path.parent.resolve()), path.resolve(), {"gguf_file": path.name}
    if path.exists():
        if not path.is_dir():
            raise ModelError(
                f"{path} is a file; give a model folder that contains config.json and the weights, "
                "or a .gguf file."
            )
        if not (path / "config.json").is_file():
            raise ModelError(f"{path} has no config.json, so it is not a transformers model folder.")
        has_safetensors = any(path.glob("*.safetensors"))
        pickled = [f for pattern in ("*.bin", "*.pt", "*.pth") for f in path.glob(pattern)]
        if not has_safetensors and pickled:
            if not allow_pickle:
                raise ModelError(
                    f"{path} has no .safetensors weights, only pickled ones (loading them runs code from the "
                    "file). Re-save the model with safetensors, or pass --allow-pickle if you trust the folder."
                )
            log.warning("%s: loading pickled weights (--allow-pickle)", path)
        _check_safetensors(path)
        use_safetensors = (
            None if (pickled and not has_safetensors) else True
        )  # None: transformers reads the .bin
        return str(path.resolve()), path.resolve(), {"use_safetensors": use_safetensors}
    if _HUB_ID.match(name_or_path):
        safe = {} if allow_pickle else {"use_safetensors": True}
        if os.environ.get("HF_HUB_OFFLINE") != "1" and not _hub_reachable():
            log.info("Hugging Face hub unreachable; trying the local hub cache only for %s", name_or_path)
            return name_or_path, None, {"local_files_only": True, **safe}
        return name_or_path, None, safe
    raise ModelError(
        f"Unknown model {name_or_path!r}: not an embedded model, not an existing folder, not a hub id "
        f"(org/name). Embedded models: {_embedded_list()}."
    )


def _load_error(name_or_path: str, folder: Path | None, exc: Exception) -> ModelError:
    if folder is not None and folder.is_file():
        return ModelError(
            f"Cannot load a causal language model from the GGUF file {folder}: {exc}. transformers reads GGUF "
            "files of the architectures it supports (Llama, Mistral, Qwen, Gemma, Phi-3, ...)."
        )
    if folder is not None:
        return ModelError(
            f"Cannot load a causal language model from {folder}: {exc}. A model folder needs config.json, "
            f"the weights and the tokenizer files, as written by save_pretrained."
        )
    return ModelError(
        f"Could not load {name_or_path!r} from the Hugging Face hub: the hub could not be reached or has no "
        f"such causal language model, and it is not in the local cache ({exc}). Embedded models work "
        f"offline: {_embedded_list()}."
    )


# What transformers raises for missing files, unknown model types, GGUF files it cannot read and quantized
# checkpoints whose backend (gptqmodel, autoawq, ...) is not installed.
_LOAD_ERRORS = (OSError, ValueError, KeyError, NotImplementedError, ImportError)


def _sources(
    name_or_path: str, trust_remote_code: bool, allow_pickle: bool = False
) -> tuple[str, Path | None, dict, dict]:
    """(what from_pretrained loads, local folder or file, model-only kwargs, kwargs of config/model/tokenizer)."""
    source, folder, extra = _resolve_source(name_or_path, allow_pickle)
    common: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if extra.get("local_files_only"):
        common["local_files_only"] = True
    if "gguf_file" in extra:
        common["gguf_file"] = extra.pop("gguf_file")
    return source, folder, extra, common


def _tokenizer(tokenizer: Any) -> Any:
    if tokenizer.pad_token is None:
        # Batching needs a pad id; padded positions are masked, so which token it is does not matter.
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _plain(model: Any) -> None:
    """A model read from GGUF holds plain dequantized tensors but still carries transformers' GGUF quantizer and
    quantization config: drop both, so it is an ordinary float model to copy, modify and save (as
    `_convert_gguf` does for the embedded models)."""
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None


def load_tokenizer(name_or_path: str, *, trust_remote_code: bool = False) -> Any:
    """The tokenizer of a model (same sources and rules as `load_model`), without its weights: cheap, so a
    checkpoint's tokenizer can be checked before its weights are read. Raises ModelError."""
    from transformers import AutoTokenizer

    source, folder, _, common = _sources(name_or_path, trust_remote_code)
    try:
        return _tokenizer(AutoTokenizer.from_pretrained(source, **common))
    except _LOAD_ERRORS as exc:
        raise _load_error(name_or_path, folder, exc) from exc


def load_model(
    name_or_path: str,
    *,
    device: str | None = None,
    dtype: torch.dtype | str | None = None,
    trust_remote_code: bool = False,
    attn_implementation: str = "eager",
    allow_pickle: bool = False,
    device_map: str | None = None,
) -> LoadedModel:
    """Load a causal LM and its tokenizer for measurement.

    ``name_or_path``: an embedded name (prepared on first use), a local folder with config.json, a .gguf file
    (dequantized to ``dtype`` on every load: seconds for small models), or a hub id.
    ``device``/``dtype`` default to ``resolve_device``'s choice. Attention defaults to "eager" because the
    sdpa kernels return no attention weights. Raises ModelError for unknown names, bad folders, an
    unreachable hub, or a model estimated to need more than 80% of the available memory. Pickled weights are
    refused unless ``allow_pickle``. ``device_map="auto"``: weights spread over every visible GPU and then the
    CPU (accelerate), as `placement.plan_placement` plans before loading (ModelError when they cannot fit).
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    dev, default_dtype = resolve_device(device)
    dtype = _as_dtype(dtype) or default_dtype
    source, folder, extra, common = _sources(name_or_path, trust_remote_code, allow_pickle)
    try:
        config = AutoConfig.from_pretrained(source, **common)
        if device_map is None:
            _check_memory(name_or_path, config, folder, dev, dtype)
        else:
            extra = {**extra, **_placement(name_or_path, config, folder, dtype, device_map)}
        t0 = time.perf_counter()
        if "gguf_file" in common:
            log.info("Reading %s: every tensor is dequantized to %s (seconds)", folder, dtype)
        model: Any = AutoModelForCausalLM.from_pretrained(
            source, dtype=dtype, attn_implementation=attn_implementation, **common, **extra
        )
        tokenizer = _tokenizer(AutoTokenizer.from_pretrained(source, **common))
    except _LOAD_ERRORS as exc:
        raise _load_error(name_or_path, folder, exc) from exc
    if "gguf_file" in common:
        _plain(model)
    if device_map is None:
        model.to(dev)
    else:  # where accelerate put the input embeddings: where every input goes
        dev = model.get_input_embeddings().weight.device
    model.eval().requires_grad_(False)
    log.info("Loaded %s on %s (%s) in %.1f s", name_or_path, dev, dtype, time.perf_counter() - t0)

    if folder is not None and folder.is_file():
        st = folder.stat()
        fingerprint = hashlib.sha256(f"{folder}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()
    elif folder is not None:
        fingerprint = _folder_fingerprint(folder)
    else:
        revision = getattr(config, "_commit_hash", None) or "unknown"
        fingerprint = hashlib.sha256(f"{source}|{revision}|{config.to_json_string()}".encode()).hexdigest()
    return LoadedModel(
        name=name_or_path,
        model=model,
        tokenizer=tokenizer,
        device=dev,
        dtype=dtype,
        source=f"embedded:{name_or_path} ({source})" if name_or_path in EMBEDDED else str(folder or source),
        n_params=sum(p.numel() for p in model.parameters()),  # parameters() counts tied weights once
        fingerprint=fingerprint,
    )


def _tied_embeddings(model: Any) -> bool:
    out = model.get_output_embeddings()
    return out is not None and out.weight is model.get_input_embeddings().weight


def model_info(loaded: LoadedModel) -> dict[str, Any]:
    """A flat, JSON-able summary of a loaded model (for the UI, the CLI and stored run metadata)."""
    cfg = loaded.config
    model = loaded.model
    counts = structure.head_counts(model)
    heads = counts.heads
    tensors = [*model.parameters(), *model.buffers()]
    return {
        "name": loaded.name,
        "architecture": (getattr(model.config, "architectures", None) or [type(model).__name__])[0],
        "n_params": loaded.n_params,
        "layers": loaded.num_layers,
        "heads": heads,
        "kv_heads": counts.kv_heads,
        "head_dim": counts.head_dim,
        "hidden_size": int(getattr(cfg, "hidden_size", None) or cfg.n_embd),
        "blocks": structure.blocks_name(model),
        "vocab_size": int(cfg.vocab_size),
        "dtype": str(loaded.dtype).removeprefix("torch."),
        "device": str(loaded.device),
        "memory_mb": round(sum(t.numel() * t.element_size() for t in tensors) / 2**20, 1),
        "tied_embeddings": _tied_embeddings(model),
        "source": loaded.source,
        "fingerprint": loaded.fingerprint,
        # How the profile measures this model, as the self-check at load chose it (probes/selfcheck.py).
        **(
            {f"selfcheck_{k}": v for k, v in loaded.check.to_dict().items()}
            if loaded.check is not None
            else {}
        ),
    }
