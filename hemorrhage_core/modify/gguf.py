"""The `gguf` handler: the model as a real llama.cpp GGUF file of the chosen type, read back and measured.

Steps, in a temporary folder under `<data dir>/gguf_tmp` (removed afterwards, also on failure):

1. export the model as modified so far (a chain may prune or change depth first) to a float GGUF file
   (`gguf_export.write_gguf`: the layout convert_hf_to_gguf.py writes);
2. with `imatrix`, run llama-imatrix on that file over the calibration windows (decoded to text: llama-imatrix
   tokenizes it again with the file's own tokenizer, which is the original's);
3. quantize it with llama-quantize (its tensor mix, or every matrix in the type with `pure`). A pure legacy type
   (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) or F16 is written by the `gguf` Python package directly, which needs no tool
   and gives the same codes as ggml's reference quantizer (tests/integration/test_gguf.py checks it);
4. read the file back through transformers' GGUF loader (every tensor dequantized to the working dtype) and run
   the self-check that every loaded model gets (the profile's own computation equals the model's forward).

What the file stores is reported as it is: `bits_per_weight` = bytes × 8 / weights over the blocks' matrices
(the weights every other quantization method counts), `gguf_file_bits_per_weight` over every tensor of the file
(embedding, output and norms included), the embedding's own bits, and the share of block weights in each GGML
type (llama.cpp keeps some tensors wider and falls back to another type for rows that do not fill a 256-value
K-quant block: on SmolLM2's 576-wide rows most of a "Q2_K" file is not Q2_K).
"""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
from collections import Counter
from pathlib import Path

from .. import llamacpp, models
from ..errors import ModelError
from ..gguf_export import ARCHITECTURES, write_gguf
from ..paths import data_dir
from ..probes.selfcheck import prepare_measurement
from ..specs.gguf import GGUFQuant
from .base import ModContext, ModifiedModel, handles

log = logging.getLogger(__name__)


def workdir_root() -> Path:
    """Where temporary GGUF files go (big: a float export of the model plus its quantized copy)."""
    root = data_dir() / "gguf_tmp"
    root.mkdir(parents=True, exist_ok=True)
    return root


def file_footprint(path: Path) -> dict[str, float]:
    """What a GGUF file stores, from its tensor table (see the module docstring for each key)."""
    from gguf import GGUFReader

    reader = GGUFReader(path)
    block_bytes = block_values = all_bytes = all_values = 0
    by_type: Counter[str] = Counter()
    out: dict[str, float] = {}
    for t in reader.tensors:
        n, nbytes = int(t.n_elements), int(t.n_bytes)
        all_bytes += nbytes
        all_values += n
        if t.name.startswith("blk.") and len(t.shape) >= 2:
            block_bytes += nbytes
            block_values += n
            by_type[t.tensor_type.name] += n
        if t.name == "token_embd.weight":
            out["gguf_embedding_bits"] = 8.0 * nbytes / n
            out[f"gguf_embedding_type_{t.tensor_type.name}"] = 1.0
        if t.name == "output.weight":
            out["gguf_output_bits"] = 8.0 * nbytes / n
    if not block_values:
        raise ModelError(
            f"{path.name} has no block weight matrices (blk.N.*): not a model file this lab reads"
        )
    out.update(
        bits_per_weight=8.0 * block_bytes / block_values,
        quantized_weights=float(block_values),
        weight_bytes=float(all_bytes),
        gguf_file_bits_per_weight=8.0 * all_bytes / all_values,
        **{f"gguf_share_{k}": v / block_values for k, v in sorted(by_type.items())},
    )
    return out


def _check_exportable(model) -> None:
    model_type = model.config.model_type
    if model_type not in ARCHITECTURES:
        raise ModelError(
            f"gguf: exporting {model_type!r} models to GGUF is not supported yet (this lab writes "
            f"{', '.join(sorted(ARCHITECTURES))}); measure a GGUF file of it with --against FILE.gguf instead"
        )
    odd = [n for n, p in model.named_parameters() if not p.dtype.is_floating_point]
    if odd:
        raise ModelError(
            f"gguf: the model holds packed (non-float) weights ({odd[0]}, ...) from an earlier modification of "
            "the chain; a GGUF export reads float weights, so put gguf before such a modification"
        )


def _imatrix_text(mod: GGUFQuant, ctx: ModContext) -> str:
    windows = ctx.calibration_windows(mod.calib_corpus, mod.calib_samples, mod.calib_len)
    return "".join(ctx.tokenizer.decode(w.tolist()) for w in windows)


_PROGRESS = re.compile(r"\[\s*(\d+)/\s*(\d+)\]")


def _quantize_with_tool(src: Path, dst: Path, mod: GGUFQuant, ctx: ModContext, work: Path) -> None:
    why = f"GGUF {mod.qtype}" + (" with an importance matrix" if mod.imatrix else "")
    if not mod.pure and mod.gguf_type.python:
        why += "; without the tools, pure=true writes every matrix in that type with the gguf Python package"
    args = ["--pure"] if mod.pure else []
    if mod.imatrix:
        text = work / "calibration.txt"
        text.write_text(_imatrix_text(mod, ctx), encoding="utf-8")
        imatrix = work / "imatrix.gguf"
        ctx.progress(0.2, f"llama-imatrix on {mod.calib_samples} x {mod.calib_len} calibration tokens")
        llamacpp.run_tool(
            "llama-imatrix",
            ["-m", str(src), "-f", str(text), "-o", str(imatrix), "-c", str(mod.calib_len),
             "--chunks", str(mod.calib_samples), "-b", str(mod.calib_len), "--no-ppl"],
            why=why,
        )  # fmt: skip
        args += ["--imatrix", str(imatrix)]
    ctx.progress(0.5, f"llama-quantize to {mod.qtype}")

    def on_line(line: str) -> None:
        hit = _PROGRESS.search(line)
        if hit:
            done, total = int(hit.group(1)), int(hit.group(2))
            ctx.progress(0.5 + 0.3 * done / max(total, 1), f"llama-quantize tensor {done}/{total}")

    llamacpp.run_tool("llama-quantize", [*args, str(src), str(dst), mod.qtype], why=why, on_line=on_line)


@handles(GGUFQuant)
def apply_gguf(state: ModifiedModel, mod: GGUFQuant, ctx: ModContext) -> None:
    if ctx.tokenizer is None:
        raise RuntimeError("the gguf handler needs the tokenizer: run it through the Runner")
    model = state.model
    _check_exportable(model)
    if not mod.python_writes:
        llamacpp.require("llama-quantize", f"GGUF {mod.qtype}" + (
            "; without the tools, pure=true writes every matrix in that type with the gguf Python package"
            if mod.gguf_type.python and not mod.imatrix else ""))  # fmt: skip
    if mod.imatrix:
        llamacpp.require("llama-imatrix", f"GGUF {mod.qtype} with an importance matrix")
    param = next(model.parameters())
    work = Path(tempfile.mkdtemp(prefix="gguf-", dir=workdir_root()))
    try:
        out = work / f"model-{mod.qtype}.gguf"
        if mod.python_writes:
            ctx.progress(0.05, f"writing {mod.qtype} GGUF (gguf Python package)")
            write_gguf(model, ctx.tokenizer, out, qtype=mod.qtype)
            state.report["gguf_quantizer_python"] = 1.0
        else:
            ctx.progress(0.05, f"exporting the model to a {mod.export} GGUF file")
            base = write_gguf(model, ctx.tokenizer, work / f"model-{mod.export}.gguf", qtype=mod.export)
            _quantize_with_tool(base, out, mod, ctx, work)
            base.unlink()  # only the quantized file is read back
            state.report["gguf_quantizer_python"] = 0.0
        footprint = file_footprint(out)
        ctx.progress(0.85, "reading the GGUF file back (transformers' loader)")
        loaded = models.load_model(str(out), device=str(param.device), dtype=param.dtype)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    check = prepare_measurement(loaded.model)
    state.report.update({f"gguf_{k}": v for k, v in check.metrics().items()})
    state.report.update(footprint)
    state.model = loaded.model
    shares = ", ".join(
        f"{k.removeprefix('gguf_share_')} {v:.0%}"
        for k, v in footprint.items()
        if k.startswith("gguf_share_")
    )
    log.info(
        "GGUF %s: %.3f bits per block weight (%s), %.3f over the whole file",
        mod.qtype, footprint["bits_per_weight"], shares, footprint["gguf_file_bits_per_weight"],
    )  # fmt: skip
