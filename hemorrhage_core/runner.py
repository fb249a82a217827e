"""run(spec) -> RunResult: from the store when the spec was measured before, otherwise modify a copy and profile.

The `Runner` owns the shared, never-mutated base models, the token windows and the base references, so a sweep
of N points loads the model and computes the base reference once. It is safe to share between threads (the
Streamlit app shares one per process): computations are queued on one `ComputeQueue` so two sessions cannot
exhaust memory (a waiting one hears how many are ahead), and reads from the store need no lock.

A new run reports its steps (queue, base reference, modification, first estimate, profile: progress.py), checks
for a cancel between every block and batch of each, and, when asked (`partial`), gives running estimates of the
headline numbers with confidence intervals: first from one window before the profile, then after every batch.
What is stored is the full profile, as without them.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from . import corpora, models
from .compute_queue import ComputeQueue
from .errors import HemlabError, SpecError
from .identity import model_identity
from .modify import ModContext, ModifiedModel, apply_modifications
from .modify.evidence import calibration_windows
from .paths import cache_dir
from .probes.partial import PartialMetrics
from .probes.profile import SHARED_BASE_NOTE, Profile, preview, profile_model
from .probes.reference import BaseReference, build_reference, reference_key
from .probes.selfcheck import prepare_measurement
from .progress import RunSteps, StepListener
from .specs import CODE_VERSION, ModelFacts, RunSpec
from .store import Store
from .structure import find_blocks

log = logging.getLogger(__name__)

Progress = Callable[[float, str], None]
PartialListener = Callable[[PartialMetrics], None]


@dataclass
class RunResult:
    spec: RunSpec
    run_key: str
    cached: bool
    metrics: dict[str, float]
    layers: pd.DataFrame  # tidy: layer, metric, value
    heads: pd.DataFrame  # tidy: layer, head, metric, value
    kl_hist: pd.DataFrame
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def notes(self) -> list[str]:
        """What the measurement skipped because it could not change (from the spec, so stored runs say it too)."""
        return [] if self.spec.touches_weights else [SHARED_BASE_NOTE]

    @classmethod
    def from_stored(cls, spec: RunSpec, run_key: str, stored, settings: dict[str, Any]) -> RunResult:
        """A result read back from the store (`Store.load_run`), marked cached."""
        return cls(spec, run_key, True, stored.metrics, stored.layers, stored.heads, stored.kl_hist, settings)

    def layer_table(self) -> pd.DataFrame:
        return Profile(self.metrics, self.layers, self.heads, self.kl_hist).layer_table()

    def to_json_dict(self) -> dict[str, Any]:
        """The public `--json` contract: spec, cached, metrics, layers (+ run_key and measurement settings)."""
        table = self.layer_table()
        layer_cols = [  # the per-layer fields of the --json contract (fixed; metric_names.py names them)
            "hidden_rel_error",
            "hidden_cosine",
            "hidden_sqnr_db",
            "attn_js_mean",
            "attn_entropy_shift",
        ]
        layers = [
            {"layer": int(r["layer"]), **{c: _finite(r.get(c)) for c in layer_cols if c in table.columns}}
            for r in table.to_dict("records")
        ]
        return {
            "run_key": self.run_key,
            "spec": self.spec.to_dict(),
            "label": self.spec.label(),
            "cached": self.cached,
            "settings": self.settings,
            "metrics": {k: _finite(v) for k, v in sorted(self.metrics.items())},
            "layers": layers,
        }


@dataclass
class Measurement:
    """A new measurement of one spec, before it is stored: the rows `Store.save_run` writes. Plain data (it
    crosses processes: a sweep worker measures, the driver stores)."""

    spec: RunSpec
    run_key: str
    run_row: dict[str, Any]
    metrics: dict[str, float]
    layers: pd.DataFrame
    heads: pd.DataFrame
    kl_hist: pd.DataFrame
    settings: dict[str, Any]


_POSITION_ATTRS = ("max_position_embeddings", "n_positions", "n_ctx", "max_sequence_length", "seq_length")
# Never NaN for a measurement that worked (infinite is legitimate: a truncating sampler gives the reference token
# probability 0, and KL(original || modified) is then infinite by definition).
_MUST_BE_NUMBERS = ("ppl_base", "ppl", "ppl_ratio", "kl_mean", "top1_agreement")


def _refuse_untrustworthy(spec: RunSpec, metrics: dict[str, float]) -> None:
    bad = [k for k in _MUST_BE_NUMBERS if k in metrics and metrics[k] != metrics[k]]
    if bad:
        raise SpecError(
            f"{spec.label()} gave NaN for {', '.join(bad)}: the modified model's numbers overflowed, so nothing "
            "was stored. Use a milder setting."
        )


def _finite(value):
    if value is None:
        return None
    value = float(value)
    return value if value == value and abs(value) != float("inf") else None


class Runner:
    def __init__(
        self,
        store: Store,
        *,
        device: str | None = None,
        dtype: str | None = None,
        device_map: str | None = None,
        trust_remote_code: bool = False,
        allow_pickle: bool = False,
        allowed_dirs: list[Path] | None = None,
        compute_lock: ComputeQueue | None = None,
    ):
        """`device`, `dtype`: where and in what precision base models run (default: `models.resolve_device`'s
        choice: CUDA in bf16/fp16 when a GPU is visible, else CPU in float32). `compute_lock`: share one queue
        between runners of a process (the app keeps a second runner when a user allows remote code); default: a
        queue of its own. `device_map="auto"`: each base model spread over the GPUs, then the CPU (models.py).
        """
        self.store = store
        self.device = device
        self.dtype = dtype
        self.device_map = device_map
        self.trust_remote_code = trust_remote_code
        self.allow_pickle = (
            allow_pickle  # pickled weights (pytorch_model.bin) run code when read: off by default
        )
        self.allowed_dirs = allowed_dirs
        self._models: dict[str, models.LoadedModel] = {}
        self._facts: dict[str, ModelFacts] = {}
        self._inputs: dict[tuple, tuple] = {}
        self._calibration: dict[tuple, object] = {}
        self._compute = compute_lock or ComputeQueue()
        self._last_modified: tuple[RunSpec, ModifiedModel] | None = None

    # -- shared, cached inputs --------------------------------------------------------------------------------
    def base(self, name: str) -> models.LoadedModel:
        """The shared base model (loaded once per process; never mutated: modifications work on copies)."""
        if name not in self._models:
            loaded = models.load_model(
                name,
                device=self.device,
                dtype=self.dtype,
                device_map=self.device_map,
                trust_remote_code=self.trust_remote_code,
                allow_pickle=self.allow_pickle,
            )
            # The fast kernel and unembedding, checked against the model's own forward (probes/selfcheck.py).
            loaded.check = prepare_measurement(loaded.model)
            self._models[name] = loaded
        return self._models[name]

    def facts(self, name: str) -> ModelFacts:
        """What settings are checked against before any work: vocabulary, positions, widest layer input."""
        if name not in self._facts:
            model = self.base(name).model
            cfg = model.config.get_text_config()
            positions = next(
                (int(v) for a in _POSITION_ATTRS if isinstance(v := getattr(cfg, a, None), int) and v > 0),
                None,
            )
            # Both trailing dimensions: Linear stores [out, in], Conv1D [in, out], fused experts either way.
            widths = [
                int(max(p.shape[-2:]))
                for block in find_blocks(model)
                for p in block.parameters()
                if p.dim() >= 2
            ]
            vocab = int(model.get_output_embeddings().weight.shape[0])
            self._facts[name] = ModelFacts(vocab=vocab, positions=positions, max_width=max(widths, default=0))
        return self._facts[name]

    def corpus(self, name_or_path: str) -> corpora.Corpus:
        return corpora.load_corpus(name_or_path, allowed_dirs=self.allowed_dirs)

    def _has_inputs(self, spec: RunSpec, corpus: corpora.Corpus) -> bool:
        return (spec.model, corpus.sha256, spec.probe) in self._inputs

    def _inputs_for(self, spec: RunSpec, corpus: corpora.Corpus, progress: Progress | None):
        """(windows, base reference) for a spec; built once per model/corpus/settings."""
        key = (spec.model, corpus.sha256, spec.probe)
        if key not in self._inputs:
            loaded = self.base(spec.model)
            p = spec.probe
            windows = corpora.token_windows(loaded.tokenizer, corpus, window=p.window, tokens=p.tokens)
            ref_dir = (
                cache_dir()
                / "reference"
                / reference_key(
                    model_identity(spec.model), corpus.sha256, p, loaded.dtype, loaded.check.key()
                )
            )
            reference = build_reference(loaded.model, windows, probe=p, path=ref_dir, progress=progress)
            self._inputs[key] = (windows, reference)
        return self._inputs[key]

    def calibration_windows(self, spec: RunSpec, corpus: str, n: int, length: int):
        """Calibration sequences [n, length] from the end of `corpus` for `spec.model`, cached per
        (model, corpus, n, length). When `corpus` is the evaluation corpus, a tail of attn_probes x attn_len tokens
        at its end is skipped (where the attention probes were read before they became prefixes of the evaluation
        windows; kept so calibration sets did not change) and an overlap with the evaluation windows at its start
        is an error (see modify/evidence.py).
        """
        calib = self.corpus(corpus)
        same = calib.sha256 == self.corpus(spec.probe.corpus).sha256
        p = spec.probe
        # The probe settings only matter when the corpora are the same; they are part of the key only then.
        key = (spec.model, calib.sha256, n, length, (p.tokens, p.attn_probes, p.attn_len) if same else None)
        if key not in self._calibration:
            self._calibration[key] = calibration_windows(
                self.base(spec.model).tokenizer,
                calib,
                n,
                length,
                skip_tail_tokens=p.attn_probes * p.attn_len if same else 0,
                reserved_head_tokens=p.tokens if same else 0,
            )
        return self._calibration[key]

    def context(
        self, spec: RunSpec, progress: Progress | None = None, cancelled: Callable[[], bool] | None = None
    ) -> ModContext:
        """What the handlers of `spec` may use: tokenizer, calibration text and the base model (read-only), and
        where they report progress (`ctx.progress`, which also checks `cancelled`)."""
        loaded = self.base(spec.model)
        return ModContext(
            on_progress=progress,
            cancelled=cancelled,
            tokenizer=loaded.tokenizer,
            # Lazy: the evaluation windows (and base reference) are built only if a handler asks for them.
            calibration=lambda: self._inputs_for(spec, self.corpus(spec.probe.corpus), None)[0],
            calibration_source=lambda corpus, n, length: self.calibration_windows(spec, corpus, n, length),
            base_model=loaded.model,
            trust_remote_code=self.trust_remote_code,
            allow_pickle=self.allow_pickle,
            allowed_dirs=self.allowed_dirs,
        )

    def modify(
        self, spec: RunSpec, *, progress: Progress | None = None, cancelled: Callable[[], bool] | None = None
    ) -> ModifiedModel:
        """`spec.mods` applied to a copy of the shared base model (or to no copy for decoding-only chains).

        The last result is kept (one slot, callers treat it as read-only): a profile followed by a generation,
        attention or flips view of the same spec shares one modification, which matters for the modifications
        that calibrate or train (GPTQ, distillation: minutes). The slot is emptied before a new modification is
        built, so at most one modified copy exists at a time. A cancelled modification (Cancelled, raised by the
        handler's `ctx.progress` between blocks) leaves the slot empty: its half-modified copy is dropped.
        """
        last = self._last_modified
        if last is not None and last[0] == spec:
            return last[1]
        self._last_modified = None
        loaded = self.base(spec.model)
        ctx = self.context(spec, progress, cancelled)
        modified = apply_modifications(loaded.model, loaded.num_layers, spec.mods, ctx)
        self._last_modified = (spec, modified)
        return modified

    def reference(self, spec: RunSpec) -> BaseReference:
        return self._inputs_for(spec, self.corpus(spec.probe.corpus), None)[1]

    # -- runs ---------------------------------------------------------------------------------------------
    def precision(self) -> str | None:
        """The dtype the base models run in, as it enters run keys: None for float32, else e.g. "torch.bfloat16"
        (decided without loading a model)."""
        dtype = models.resolve_dtype(self.device, self.dtype)
        return None if dtype == torch.float32 else str(dtype)

    def cache_key(self, spec: RunSpec) -> tuple[str, corpora.Corpus]:
        corpus = self.corpus(spec.probe.corpus)
        key = spec.cache_key(
            corpus_sha256=corpus.sha256, model_identity=model_identity(spec.model), dtype=self.precision()
        )
        return key, corpus

    def lookup(self, spec: RunSpec) -> RunResult | None:
        """The stored result of `spec`, or None. Never touches a model."""
        key, corpus = self.cache_key(spec)
        stored = self.store.load_run(key)
        if stored is None:
            return None
        return RunResult.from_stored(spec, key, stored, self._settings(spec, corpus))

    def run(
        self,
        spec: RunSpec,
        *,
        progress: Progress | None = None,
        cancelled: Callable[[], bool] | None = None,
        partial: PartialListener | None = None,
        steps: StepListener | None = None,
    ) -> RunResult:
        """The stored result of `spec`, or a new measurement (stored before it is returned).

        `progress(fraction, message)`: the run's overall fraction; `steps(StepUpdate)`: the same reports by step,
        with each step's own clock (for an ETA from this machine's measured throughput); `cancelled()`: checked
        while waiting in the queue and between the blocks and batches of every step (Cancelled: nothing
        stored); `partial(PartialMetrics)`: running headline estimates with 95 % intervals, the last one equal to
        the stored numbers.
        """
        cached = self.lookup(spec)
        if cached is not None:
            return cached
        run_steps = RunSteps(
            self._plan(spec, partial), progress=progress, listener=steps, cancelled=cancelled
        )
        queue = run_steps.step("queue")
        with self._compute.turn(
            waiting=lambda ahead: queue(0.0, f"waiting for another computation: {ahead} ahead"),
            cancelled=cancelled,
        ):
            cached = self.lookup(spec)  # another thread may have computed it while we waited
            if cached is not None:
                return cached
            return self._compute_run(spec, run_steps, partial)

    def _plan(self, spec: RunSpec, partial: PartialListener | None) -> tuple[str, ...]:
        """The steps a new run of `spec` goes through (a guess before the lock: the reference may be built by
        the run ahead in the queue; a step that turns out to be done is skipped, which only shortens the ETA)."""
        corpus = self.corpus(spec.probe.corpus)
        steps = ["queue"]
        if not self._has_inputs(spec, corpus):
            steps.append("reference")
        if spec.mods:
            steps.append("modify")
        if partial is not None and _worth_a_preview(spec):
            steps.append("preview")
        return (*steps, "profile")

    def sweep(self, specs: list[RunSpec], *, progress: Progress | None = None) -> list[RunResult]:
        """The points one after another in this process (the `serial` executor; executors/ for the others)."""
        from .executors.serial import SerialExecutor

        return SerialExecutor().run(self, specs, progress=progress)

    def measure(self, spec: RunSpec, *, progress: Progress | None = None) -> Measurement:
        """A new measurement of `spec`, not looked up and not stored: what a sweep worker of another process
        sends back to the one process that writes the store (executors/ray_cluster.py). Waits its turn in the
        compute queue like `run`."""
        run_steps = RunSteps(self._plan(spec, None), progress=progress)
        with self._compute.turn():
            return self._measure(spec, run_steps, None)

    def save(self, measurement: Measurement) -> RunResult:
        """Write a measurement to the store (one transaction; a key already stored is left as it is) and return
        it as a result."""
        m = measurement
        self.store.save_run(
            run_key=m.run_key,
            run_row=m.run_row,
            metrics=m.metrics,
            layers=m.layers,
            heads=m.heads,
            kl_hist=m.kl_hist,
        )
        return RunResult(m.spec, m.run_key, False, m.metrics, m.layers, m.heads, m.kl_hist, m.settings)

    def _compute_run(self, spec: RunSpec, steps: RunSteps, partial: PartialListener | None) -> RunResult:
        result = self.save(self._measure(spec, steps, partial))
        steps.done()
        return result

    def _measure(self, spec: RunSpec, steps: RunSteps, partial: PartialListener | None) -> Measurement:
        key, corpus = self.cache_key(spec)
        spec.check_model(self.facts(spec.model))  # before the reference or any modification is computed
        started = time.perf_counter()
        fresh = not self._has_inputs(spec, corpus)
        windows, reference = self._inputs_for(spec, corpus, steps.step("reference") if fresh else None)
        t0 = time.perf_counter()
        modified = self.modify(spec, progress=steps.step("modify"), cancelled=steps.cancelled)
        modify_s = time.perf_counter() - t0
        base_model = self.base(
            spec.model
        ).model  # the logit lens reads through the base's norm and unembedding
        if partial is not None and _worth_a_preview(spec):
            partial(
                preview(modified, reference, windows, progress=steps.step("preview"), base_model=base_model)
            )
        t1 = time.perf_counter()
        profile = profile_model(
            modified,
            reference,
            windows,
            batch_size=spec.probe.batch_size,
            progress=steps.step("profile"),
            cancelled=steps.cancelled,
            base_model=base_model,
            partial=partial,
        )
        profile_s = time.perf_counter() - t1
        check = self.base(spec.model).check.metrics()
        metrics = {**profile.metrics, **profile.report, **check, "modify_s": modify_s, "profile_s": profile_s}
        settings = self._settings(spec, corpus)
        _refuse_untrustworthy(spec, metrics)
        run_row = {
            "model": spec.model,
            "label": spec.label(),
            "spec_json": spec.to_json(),
            "corpus": settings["corpus"],
            "corpus_sha256": corpus.sha256,
            "window_tokens": spec.probe.window,
            "stride": spec.probe.stride,
            "token_budget": spec.probe.tokens,
            "code_version": CODE_VERSION,
            "created_at": datetime.now(UTC).replace(tzinfo=None),
            "wall_s": time.perf_counter() - started,
            "report_json": json.dumps(profile.report),
        }
        return Measurement(
            spec, key, run_row, metrics, profile.layers, profile.heads, profile.kl_hist, settings
        )

    @staticmethod
    def _settings(spec: RunSpec, corpus: corpora.Corpus) -> dict[str, Any]:
        return {
            "corpus": corpus.name,
            "corpus_sha256": corpus.sha256,
            "window": spec.probe.window,
            "stride": spec.probe.stride,
            "tokens": spec.probe.tokens,
            "code_version": CODE_VERSION,
        }


def _worth_a_preview(spec: RunSpec) -> bool:
    """A first estimate from one window pays when the profile's first batch holds several windows (one batch
    is the whole default budget); with one window per batch the profile's own first batch is as early."""
    p = spec.probe
    return min(p.batch_size, p.tokens // p.window) > 1


def settings_from_row(row: dict[str, Any]) -> dict[str, Any]:
    """The measurement settings of a stored run, under the same names RunResult.settings uses."""
    return {
        "corpus": row.get("corpus"),
        "corpus_sha256": row.get("corpus_sha256"),
        "window": int(row["window_tokens"]) if row.get("window_tokens") is not None else None,
        "stride": int(row["stride"]) if row.get("stride") is not None else None,
        "tokens": int(row["token_budget"]) if row.get("token_budget") is not None else None,
        "code_version": row.get("code_version"),
    }


def stored_result(store: Store, run_key: str) -> RunResult | None:
    """A stored run as a RunResult (cached=True), or None if the key is not in the store.

    Raises HemlabError when the stored spec names a modification kind this code no longer knows.
    """
    stored = store.load_run(run_key)
    if stored is None:
        return None
    try:
        spec = RunSpec.from_dict(json.loads(stored.row["spec_json"]))
    except (HemlabError, KeyError, TypeError, ValueError) as exc:
        raise HemlabError(
            f"stored run {run_key[:12]} cannot be read by this version of the code: {exc}"
        ) from exc
    return RunResult.from_stored(spec, run_key, stored, settings_from_row(stored.row))
