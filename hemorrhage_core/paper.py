"""The seed paper's tables (data/paper/*.csv, transcribed, cited in SOURCES.md) as tidy frames, normalised to
each model's own baseline so our runs can be drawn beside them. Pure pandas: no Streamlit.

Normalising needs the dense (unmodified) perplexity behind each row, which the tables do not print. The choice
for each row is written down in `baseline_for` with its reason and shown on the page:
- LLaMA-2-7B on WikiText-2 is 5.12 at a 4,096-token context and 5.47 at 2,048 (the paper's Table 1).
- The quantization table says it used a 2K context: 5.47.
- The unstructured tables mix contexts (SOURCES.md caveat). A row whose 10 %-sparsity perplexity is below 5.47
  cannot have been measured at 2K (pruning 10 % does not beat the dense model there), so it is taken as 4K
  (5.12); the others as 2K (5.47).
- Structured pruning: SliceGPT and SLEB report 2K-context numbers (5.47). LLM-Pruner and FLAP evaluate on short
  windows whose dense perplexity is not given here, so those rows have no baseline and are not normalised.
- GGUF Qwen2.5: each model's FP16 row; where the table has none, its Q8_0 row (flagged as such).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pandas as pd

from .analysis.sweep_points import changed_fields, short_model
from .paths import PROJECT_ROOT

PAPER_DIR = PROJECT_ROOT / "data" / "paper"
CITATION = (
    'Ziyang Ma, Zuchao Li, Lefei Zhang, Gui-Song Xia, Bo Du, Liangpei Zhang, Dacheng Tao. "Model Hemorrhage and '
    "the Robustness Limits of Large Language Models.\" arXiv:2503.23924 (2025). Tables transcribed from the authors' "
    "companion repository github.com/whucs21Mzy/Model-Phase-Transitions."
)
DENSE_4K, DENSE_2K = 5.12, 5.47  # LLaMA-2-7B, WikiText-2 perplexity at 4,096 / 2,048 tokens of context


@dataclass(frozen=True)
class PaperTable:
    key: str
    file: str
    title: str
    x_label: str
    family: str  # which of our families it is compared with ("" for none)
    note: str


TABLES: dict[str, PaperTable] = {
    t.key: t
    for t in (
        PaperTable(
            "structured",
            "structured_pruning_llama2_7b.csv",
            "Structured pruning, LLaMA2-7b (WikiText-2)",
            "sparsity (share of parameters removed)",
            "depth",
            "LLM-Pruner, FLAP, SLEB, SliceGPT, with and without recovery fine-tuning.",
        ),
        PaperTable(
            "unstructured_c4",
            "unstructured_pruning_llama2_7b_c4calib.csv",
            "Unstructured and N:M pruning, LLaMA2-7b, default (C4) calibration",
            "sparsity",
            "prune",
            "N:M columns (2:4, 4:8) are at 50 % sparsity and drawn as separate points.",
        ),
        PaperTable(
            "unstructured_ptb",
            "unstructured_pruning_llama2_7b_ptbcalib.csv",
            "Unstructured pruning, LLaMA2-7b, PTB calibration (calibration ablation)",
            "sparsity",
            "prune",
            "Same methods calibrated on out-of-domain PTB text.",
        ),
        PaperTable(
            "quant",
            "quant_methods_llama2_7b.csv",
            "Quantization methods, LLaMA2-7b, 2K context",
            "weight bits",
            "quant",
            "GPTQ, AWQ, GGUF, QLoRA NF4/FP4, LLM.int8(), SmoothQuant W8A8.",
        ),
        PaperTable(
            "gguf",
            "gguf_qwen25_ppl.csv",
            "GGUF quantization across Qwen2.5 0.5B–72B",
            "nominal bits",
            "gguf",
            "Q2_K is a mixed format of about 2.6 bits per weight; 'bits' is the nominal label.",
        ),
        PaperTable(
            "decoding",
            "decoding_table.csv",
            "12 decoding methods × 9 models (task scores)",
            "decoder",
            "decode",
            "Task scores (MBPP, GSM8K pass rates; Wikinews), not perplexities.",
        ),
    )
}
_NM = re.compile(r"^(\d+):(\d+)$")


@cache
def _read(file: str, folder: str) -> pd.DataFrame:
    return pd.read_csv(Path(folder) / file)


def raw(key: str, folder: Path = PAPER_DIR) -> pd.DataFrame:
    """A paper table exactly as transcribed."""
    return _read(TABLES[key].file, str(folder)).copy()


def sources_markdown(folder: Path = PAPER_DIR) -> str:
    return (folder / "SOURCES.md").read_text(encoding="utf-8")


def tidy(key: str, folder: Path = PAPER_DIR) -> pd.DataFrame:
    """Perplexity tables as tidy rows: method, x, ppl, pattern ('' or 'N:M'), model (gguf only).

    Wide sparsity / bit columns become `x`; N:M columns become x = N/M with `pattern` set; empty and 'nan'
    cells are dropped. The decoding table is not a perplexity table: use `decoding_scores`.
    """
    df = raw(key, folder)
    if key == "gguf":
        out = df.rename(columns={"scheme": "method_scheme", "bits_label": "x"})
        out["method"] = out["model"]
        out["pattern"] = ""
        return out[["method", "model", "method_scheme", "x", "ppl", "size_gb", "pattern"]]
    if key == "decoding":
        raise ValueError("the decoding table holds task scores: use decoding_scores()")
    rows = []
    for rec in df.to_dict("records"):
        method = rec.pop("method")
        for col, value in rec.items():
            if value is None or (isinstance(value, float) and math.isnan(value)):
                continue
            m = _NM.match(str(col))
            if m:
                x, pattern = int(m.group(1)) / int(m.group(2)), str(col)
            else:
                x, pattern = float(str(col).removesuffix("bit")), ""
            rows.append({"method": method, "x": x, "ppl": float(value), "pattern": pattern})
    return pd.DataFrame(rows, columns=["method", "x", "ppl", "pattern"])


def decoding_scores(folder: Path = PAPER_DIR) -> pd.DataFrame:
    """The decoding table as tidy rows: model, task, decoder, score."""
    df = raw("decoding", folder)
    return df.melt(id_vars=["model", "task"], var_name="decoder", value_name="score")


@dataclass(frozen=True)
class Baseline:
    ppl: float | None
    reason: str


def baseline_for(key: str, method: str, rows: pd.DataFrame) -> Baseline:
    """The dense perplexity a row of a table is normalised by, with the reason (see the module docstring).

    `rows` are the tidy rows of that method (used by the rules that look at the data).
    """
    if key == "quant":
        return Baseline(DENSE_2K, "2K context stated by the table: dense LLaMA-2-7B 5.47")
    if key in ("unstructured_c4", "unstructured_ptb"):
        first = rows[(rows.x == 0.1) & (rows.pattern == "")]
        if first.empty:
            return Baseline(DENSE_2K, "no 10 % point to tell the context: assumed 2K, dense 5.47")
        if float(first.ppl.iloc[0]) < DENSE_2K:
            return Baseline(DENSE_4K, "10 % point below 5.47, so a 4K context: dense 5.12")
        return Baseline(DENSE_2K, "10 % point ≥ 5.47, consistent with a 2K context: dense 5.47")
    if key == "structured":
        if method.startswith(("LLM-Pruner", "FLAP")):
            return Baseline(None, "evaluated on short windows whose dense perplexity the table does not give")
        return Baseline(DENSE_2K, "2K context (SliceGPT / SLEB protocol): dense 5.47")
    if key == "gguf":
        fp16 = rows[rows.method_scheme == "FP16"]
        if not fp16.empty:
            return Baseline(float(fp16.ppl.iloc[0]), "the model's own FP16 row")
        q8 = rows[rows.method_scheme == "Q8_0"]
        if not q8.empty:
            return Baseline(float(q8.ppl.iloc[0]), "no FP16 row: the model's Q8_0 row (≈ lossless)")
    return Baseline(None, "no baseline")


def normalised(key: str, folder: Path = PAPER_DIR) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rows with `ratio` = ppl / baseline, one row per method with its baseline and reason).

    Methods without a baseline keep ratio NaN and are listed with the reason.
    """
    t = tidy(key, folder)
    parts, info = [], []
    for method, rows in t.groupby("method", sort=False):
        b = baseline_for(key, str(method), rows)
        rows = rows.copy()
        rows["ratio"] = rows.ppl / b.ppl if b.ppl else float("nan")
        parts.append(rows)
        info.append({"method": method, "baseline_ppl": b.ppl, "reason": b.reason})
    return pd.concat(parts, ignore_index=True), pd.DataFrame(info)


# -- our runs on the paper's axes -------------------------------------------------------------------------------


def _x_of(family: str, mods: list[dict], metrics: dict[str, float], n_layers: int | None) -> float | None:
    """Where one of our runs sits on the paper's x axis: bits for quantization, sparsity for pruning, the share
    of blocks removed for depth changes. None when the run has no such coordinate."""
    if family in ("quant", "gguf"):  # a GGUF type has no bits field: it sits at the bits its file stores
        bits = [m["bits"] for m in mods if isinstance(m.get("bits"), (int, float))]
        return float(bits[0]) if bits else metrics.get("bits_per_weight")
    if family == "prune":
        if metrics.get("achieved_sparsity") is not None:
            return float(metrics["achieved_sparsity"])
        sp = [m["sparsity"] for m in mods if isinstance(m.get("sparsity"), (int, float))]
        return float(sp[0]) if sp else None
    if family == "depth":
        removed = [len(m["layers"]) for m in mods if isinstance(m.get("layers"), (list, tuple))]
        if removed and n_layers:
            return removed[0] / n_layers
    return None


def _num(v) -> bool:
    return v is not None and not (isinstance(v, float) and math.isnan(v))


def our_points(
    history: pd.DataFrame, family: str, layer_counts: dict[str, int] | None = None
) -> pd.DataFrame:
    """Our stored single-family runs as (series, x, ratio, family, label, model, corpus) rows.

    `history` is ui.runs.history(store); `layer_counts` maps run keys to the original model's block count (the
    x of a depth run is the share of blocks removed). A series is one model + modification kind + the fields
    that are not the x coordinate, so a bits sweep of RTN with group 128 is one line.
    """
    cols = ["series", "x", "ratio", "family", "label", "model", "corpus"]
    if history.empty:
        return pd.DataFrame(columns=cols)
    rows = []
    for rec in history[history.family == family].to_dict("records"):
        mods = json.loads(rec["spec_json"]).get("mods", [])
        metrics = {k: rec.get(k) for k in ("achieved_sparsity", "bits_per_weight")}
        metrics = {
            k: v for k, v in metrics.items() if v is not None and not (isinstance(v, float) and math.isnan(v))
        }
        x = _x_of(family, mods, metrics, (layer_counts or {}).get(rec["run_key"]))
        if x is None or rec.get("ppl_ratio") is None:
            continue
        fixed = [c for m in mods if (c := changed_fields(m, skip=("bits", "sparsity", "layers")))]
        kinds = "+".join(m["kind"] for m in mods)
        # Runs measured on other corpora, budgets or windows are other curves: a line through them would join
        # numbers measured on different tokens.
        budget, window = rec.get("token_budget"), rec.get("window_tokens")
        measured = f" · {rec.get('corpus')}" + (f" {int(budget):,} tok" if _num(budget) else "")
        measured += f" w{int(window)}" if _num(window) else ""
        rows.append(
            {
                "series": f"{short_model(rec['model'])} · {kinds}"
                + (f" ({', '.join(fixed)})" if fixed else "")
                + measured,
                "x": x,
                "ratio": float(rec["ppl_ratio"]),
                "family": family,
                "label": rec["label"],
                "model": rec["model"],
                "corpus": rec["corpus"],
            }
        )
    return pd.DataFrame(rows, columns=cols)


# The GGUF table's task columns and the tasks of ours that use the same data (our ARC is its validation split).
PAPER_TASKS = {
    "arc_c": ("ARC-Challenge", "arc_challenge"),
    "arc_e": ("ARC-Easy", "arc_easy"),
    "mmlu": ("MMLU", "mmlu"),
}


def task_ratios(folder: Path = PAPER_DIR) -> pd.DataFrame:
    """The GGUF table's ARC / MMLU accuracies over each model's FP16 accuracy: model, task, x (bits), ratio."""
    df = raw("gguf", folder)
    rows = []
    for model, g in df.groupby("model", sort=False):
        fp16 = g[g.bits_label == 16]
        if fp16.empty:
            continue
        for col, (title, _) in PAPER_TASKS.items():
            ref = float(fp16[col].iloc[0])
            for r in g.itertuples():
                if ref > 0 and r.bits_label != 16:
                    rows.append(
                        {
                            "model": model,
                            "task": title,
                            "x": float(r.bits_label),
                            "ratio": getattr(r, col) / ref,
                        }
                    )
    return pd.DataFrame(rows, columns=["model", "task", "x", "ratio"])


def our_task_points(history: pd.DataFrame, tasks: pd.DataFrame) -> pd.DataFrame:
    """Our stored quantization runs with task results on ARC / MMLU: series, task, x (bits), ratio (modified
    over original accuracy on the same items), n_items. `tasks`: tasks/tables.stored_frame, labelled by run key."""
    cols = ["series", "task", "x", "ratio", "n_items"]
    if history.empty or tasks.empty:
        return pd.DataFrame(columns=cols)
    ours = {ours_name: title for title, ours_name in PAPER_TASKS.values()}
    rows = []
    for rec in history[history.family == "quant"].to_dict("records"):
        mods = json.loads(rec["spec_json"]).get("mods", [])
        x = _x_of("quant", mods, {}, None)
        mine = tasks[(tasks.label == rec["run_key"]) & tasks.task.isin(list(ours)) & (tasks.metric == "acc")]
        for t in mine.itertuples():
            if x is None or not t.base:
                continue
            kinds = "+".join(m["kind"] for m in mods)
            rows.append({"series": f"{short_model(rec['model'])} · {kinds} · {ours[t.task]}", "task": ours[t.task],
                         "x": x, "ratio": t.modified / t.base, "n_items": t.n_items})  # fmt: skip
    return (
        pd.DataFrame(rows, columns=cols).sort_values(["series", "x"]) if rows else pd.DataFrame(columns=cols)
    )
