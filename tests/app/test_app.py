"""The dashboard, headless: every page through streamlit.testing.v1.AppTest on a tiny local model, plus the pure
logic behind the pages (form building, ETA, paper normalisation, model-folder policy, sweeps, headlines).

Widgets must drive the expected spec (checked through the run the store holds afterwards), charts must render,
and bad input must be shown as a message, never raised.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pandas as pd
import pytest
from dashboard_env import applied, make_env
from streamlit.testing.v1 import AppTest

from dashboard import eta, fields, runs
from dashboard.state import model_problem, save_upload
from hemorrhage_core import paper
from hemorrhage_core.analysis import sweep_points as sweeps
from hemorrhage_core.errors import CorpusError, SpecError
from hemorrhage_core.specs import (
    GGUFQuant,
    Modification,
    ProbeSettings,
    Prune,
    QuantizeRTN,
    RunSpec,
    Sampler,
    Temperature,
    option,
)
from hemorrhage_core.specs.families import stack_order
from hemorrhage_core.store import Store

APP = str(Path(__file__).resolve().parents[2] / "app.py")


# -- pure logic ----------------------------------------------------------------------------------------------------


def test_form_fields_follow_types_hints_and_the_class_validation():
    by_name = {f.name: f for f in fields.form_fields(QuantizeRTN)}
    assert by_name["bits"].widget == "slider" and (by_name["bits"].lo, by_name["bits"].hi) == (2, 8)
    assert by_name["scheme"].choices == ("sym", "asym")
    assert by_name["include_lm_head"].widget == "checkbox"
    # Only values the class accepts are offered: RTN refuses group size -1 (GPTQ's per-channel convention).
    assert -1 not in by_name["group_size"].choices and 128 in by_name["group_size"].choices
    assert by_name["group_size"].enabled_when == ("granularity", "group")
    prune = {f.name: f for f in fields.form_fields(Prune)}
    assert "magnitude" in prune["method"].choices
    assert prune["sparsity"].lo == 0.0 and prune["sparsity"].hi < 1.0


@dataclass(frozen=True)
class Knob(Modification):
    """A modification that only exists here: declared hints, a Literal, a tuple and an optional field."""

    mode: str = option("a", suggest=lambda: ["a", "b"])
    strength: float = option(1.0, slider=(0.0, 2.0, 0.5))
    flavour: Literal["x", "y"] = "y"
    layers: tuple[int, ...] = ()
    cap: int | None = None


def test_declared_ui_hints_win_and_literal_types_give_choices():
    by_name = {f.name: f for f in fields.form_fields(Knob)}
    assert by_name["mode"].choices == ("a", "b")
    assert (by_name["strength"].lo, by_name["strength"].hi, by_name["strength"].step) == (0.0, 2.0, 0.5)
    assert by_name["flavour"].choices == ("x", "y") and by_name["flavour"].widget == "select"
    assert by_name["layers"].widget == "int_list"
    assert by_name["cap"].widget == "optional_number"
    assert fields.build_mod(Knob, {"strength": 1.5}).strength == 1.5


def test_layer_bounds_come_from_the_model_context():
    depth = fields.family_kinds("depth")
    if "duplicate_layers" not in depth:
        pytest.skip("the depth family has not landed")
    by_name = {f.name: f for f in fields.form_fields(depth["duplicate_layers"], {"num_layers": 12})}
    assert (by_name["end"].lo, by_name["end"].hi) == (1, 12)


def test_parse_int_list_accepts_ranges_and_rejects_words():
    assert fields.parse_int_list("3, 5-7,9") == (3, 5, 6, 7, 9)
    assert fields.parse_int_list("") == ()
    with pytest.raises(SpecError):
        fields.parse_int_list("3, x")


def test_every_family_kind_gets_a_form_without_errors():
    for family in stack_order():
        for cls in fields.family_kinds(family).values():
            specs = fields.form_fields(cls, {"num_layers": 4})
            assert [f.name for f in specs] == [f.name for f in dataclasses.fields(cls) if f.init]


def test_method_pickers_show_readable_titles_that_fit():
    width = 54
    for family in stack_order():
        kinds = fields.family_kinds(family)
        titles = {kind: fields.method_title(kind, cls, width) for kind, cls in kinds.items()}
        assert len(set(titles.values())) == len(titles), titles  # two methods of a page never read the same
        for kind, title in titles.items():
            assert title != kind and "_" not in title and "`" not in title and "—" not in title, (kind, title)
            assert 3 <= len(title) <= width and not title.endswith("…"), (
                kind,
                title,
            )  # no cut text on this registry
    # A docstring too long to name the method is cut at a word, never inside one.
    assert fields.method_title("knob", Knob, width=16) == "A modification…"
    assert fields.method_title("knob", Knob) == "A modification that only exists here"
    assert fields.method_title("twice", Twice) == "Copy the chosen blocks"  # no bare field name in a title


@dataclass(frozen=True)
class Twice(Modification):
    """Copy the chosen blocks `times` more times, right after the last one."""


def test_number_columns_keep_one_spelling_and_missing_text_reads_as_a_dash():
    from dashboard import widgets

    # "%g" would print 7.2e-6 as 0.0000072 beside 4.2e-7: one exponent form for the whole column
    assert widgets.number_format(pd.Series([4.2e-7, 7.2e-6, 0.006])) == "%.3e"
    assert widgets.number_format(pd.Series([0.5, 1.25, float("nan"), 0.0])) == "%.4g"
    labels = widgets.column_labels(pd.DataFrame({"kl_mean": [4.2e-7, 0.1], "ppl_ratio": [1.0, 1.2]}))
    assert labels["kl_mean"]["type_config"]["format"] == "%.3e"
    assert labels["ppl_ratio"]["type_config"]["format"] == "%.4g"
    shown = widgets.with_dashes(pd.DataFrame({"first over 2x": [None, "4 → 3"], "bits": [8.0, None]}))
    assert shown["first over 2x"].tolist() == ["—", "4 → 3"] and shown.bits.isna().tolist() == [False, True]


def test_compare_table_fits_the_page_in_ten_columns():
    from dashboard import compare

    history = pd.DataFrame(
        {"run_key": ["a"], "label": ["RTN w4 sym channel"], "model": ["/models/smollm2-135m"], "family": ["quant"],
         "corpus": ["wiki"], "token_budget": [16384], "window_tokens": [512], "ppl_ratio": [1.04],
         "kl_mean": [0.03], "top1_agreement": [0.93], "bits_per_weight": [4.25], "achieved_sparsity": [None],
         "created_at": [pd.Timestamp("2026-12-01 15:00")], "spec_json": ["{}"]}
    )  # fmt: skip
    shown = compare.display_rows(history)
    assert list(shown.columns) == compare.SHOWN and len(shown.columns) <= 10
    assert shown.measured_on.tolist() == ["wiki · 16,384 / 512"] and shown.model.tolist() == ["smollm2-135m"]
    assert set(compare.COLUMNS) | {"kl_mean"} == set(
        compare.SHOWN
    )  # every shown column has a readable header


def _history(rows):
    return pd.DataFrame(rows, columns=["model", "spec_json", "token_budget", "wall_s"])


def test_eta_prefers_the_same_chain_on_the_same_model_and_scales_with_tokens():
    rtn = RunSpec("m", (QuantizeRTN(bits=4),)).to_json()
    prune = RunSpec("m", (Prune(sparsity=0.5),)).to_json()
    history = _history(
        [("m", rtn, 1024, 10.0), ("m", rtn, 1024, 30.0), ("m", rtn, 1024, 12.0), ("m", prune, 1024, 99.0)]
    )
    spec = RunSpec("m", (QuantizeRTN(bits=3),), ProbeSettings(tokens=2048))
    est = eta.estimate_seconds(history, spec)
    assert est.seconds == pytest.approx(24.0)  # median 12 s per 1,024 tokens, twice the tokens
    assert "3 stored runs" in est.basis
    other = eta.estimate_seconds(history, RunSpec("m", (Temperature(2.0),), ProbeSettings(tokens=1024)))
    assert "other methods" in other.basis
    assert eta.estimate_seconds(history.iloc[:0], spec) is None


def test_a_run_estimate_reads_as_a_person_says_it():
    assert eta.when(0.04) == "under a second", "never 'about 0 s'"
    assert eta.when(1.2) == "about 2 s", "seconds rounded up"
    assert eta.when(45.0) == "about 45 s" and eta.when(150.0) == "about 2.5 min"
    assert eta.Estimate(0.3, "median of 2 runs").text() == "under a second (median of 2 runs)"


def test_captions_of_multi_run_charts_list_every_run_and_its_measurement():
    from dashboard.runs import CAPTION_LINES, runs_caption, series_caption

    rows = pd.DataFrame(
        [
            ("RTN w4 sym channel", "smollm2-135m", "news", "ab" * 32, 512, 4096),
            ("RTN w3 sym channel", "smollm2-135m", "news", "ab" * 32, 512, 4096),
            ("magnitude 50%", "/srv/models/tiny", "words", "cd" * 32, 64, 256),
        ],
        columns=["label", "model", "corpus", "corpus_sha256", "window_tokens", "token_budget"],
    )
    lines = runs_caption(rows).split("\n")
    assert lines[0].startswith("3 run(s)")
    assert (
        "smollm2-135m · corpus news (sha256 abababababab) · window 512 · 4,096 tokens: RTN w4 sym channel, RTN w3"
        in lines[1]
    )
    assert "tiny · corpus words (sha256 cdcdcdcdcdcd) · window 64 · 256 tokens: magnitude 50%" in lines[2]
    assert runs_caption(rows.iloc[:0]) is None
    many = pd.concat([rows.assign(model=f"m{i}") for i in range(10)])
    assert len(runs_caption(many).split("\n")) == CAPTION_LINES and "more lines of runs" in runs_caption(many)
    points = pd.DataFrame({"series": ["a · quant_rtn", "a · quant_rtn", "b · gptq"], "x": [4, 3, 8]})
    caption = series_caption(points, "bits", source="Sweep")
    assert caption.split("\n") == ["Sweep", "a · quant_rtn — bits: 3, 4", "b · gptq — bits: 8"]


def _simulated_updates(durations: dict[str, float], units: dict[str, int]):
    """(time, StepUpdate) of a run whose steps take `durations` seconds in `units` equal blocks or batches."""
    from hemorrhage_core.progress import StepUpdate

    steps, t, out = tuple(durations), 0.0, []
    for step in steps:
        n = units.get(step, 1)
        for k in range(n + 1):
            out.append(
                (
                    t + durations[step] * k / n,
                    StepUpdate(step, steps, k / n, f"{k}/{n}", durations[step] * k / n),
                )
            )
        t += durations[step]
    return out, t


def test_live_eta_is_within_2x_of_the_truth_from_the_first_quarter_on():
    # A calibrated method: 30 blocks of 2 s, a 2 s first estimate, a 22 s profile; the stored history says the
    # profile takes 33 s (another machine's pace) and knows nothing of this method.
    durations = {"queue": 0.0, "modify": 60.0, "preview": 2.0, "profile": 22.0}
    updates, total = _simulated_updates(durations, {"modify": 30, "profile": 30})
    history = pd.DataFrame(
        [("m", RunSpec("m", (QuantizeRTN(bits=4),)).to_json(), 4096, 40.0, 33.0, 1.0)],
        columns=["model", "spec_json", "token_budget", "wall_s", "profile_s", "modify_s"],
    )
    spec = RunSpec("m", (Prune(sparsity=0.5, method="wanda"),))
    priors = eta.step_priors(history, spec)
    assert priors["profile"] == 33.0 and "modify" not in priors, "RTN's modify time says nothing about Wanda"
    live = eta.LiveEta(priors, windows=8, started=0.0)
    fractions = []
    for now, u in updates:
        fraction, left = live.update(u, now)
        fractions.append(fraction)
        truth = total - now
        if now >= total / 4 and truth > 2:
            assert left is not None and truth / 2 <= left <= truth * 2, (now, u.step, left, truth)
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)


def test_model_policy_refuses_folders_outside_the_allowed_ones(tmp_path):
    inside, outside = tmp_path / "allowed" / "m", tmp_path / "elsewhere" / "m"
    for d in (inside, outside):
        d.mkdir(parents=True)
        (d / "config.json").write_text("{}")
    allowed = [tmp_path / "allowed"]
    assert model_problem(str(inside), allowed) is None
    assert "outside the folders" in model_problem(str(outside), allowed)
    assert "outside the folders" in model_problem(str(inside / ".." / ".." / "elsewhere" / "m"), allowed)
    link = tmp_path / "allowed" / "link"
    link.symlink_to(outside)
    assert "outside the folders" in model_problem(str(link), allowed), "symlinks are resolved first"
    assert model_problem("smollm2-135m", allowed) is None
    assert model_problem("HuggingFaceTB/SmolLM2-135M", allowed) is None  # the loader reports an offline hub
    assert "neither an embedded model" in model_problem("not a model", allowed)
    (tmp_path / "allowed" / "empty").mkdir()
    assert "no config.json" in model_problem(str(tmp_path / "allowed" / "empty"), allowed)


def test_uploads_are_checked_before_they_are_stored(tmp_path, monkeypatch):
    monkeypatch.setenv("HEMLAB_ALLOWED_DIRS", str(tmp_path / "up"))
    with pytest.raises(CorpusError, match="binary"):
        save_upload("x.txt", b"\x00\x01\x02")
    with pytest.raises(CorpusError, match="UTF-8"):
        save_upload("x.txt", "café".encode("latin-1"))
    path = Path(save_upload("../../evil name.txt", b"hello world"))
    assert path.parent == (tmp_path / "up").resolve() and path.read_text() == "hello world"
    assert "/" not in path.name and " " not in path.name


def test_paper_tables_normalise_to_their_stated_or_inferred_baselines():
    rows, base = paper.normalised("quant")
    gptq = rows[(rows.method == "GPTQ") & (rows.x == 8)]
    assert gptq.ratio.iloc[0] == pytest.approx(5.4739 / 5.47)
    rows, base = paper.normalised("unstructured_c4")
    reasons = base.set_index("method").baseline_ppl
    assert (
        reasons["Wanda"] == 5.12 and reasons["RIA"] == 5.47
    )  # RIA's 10% point (5.48) rules out a 4K context
    nm = rows[(rows.method == "Wanda") & (rows.pattern == "2:4")]
    assert nm.x.iloc[0] == 0.5
    rows, base = paper.normalised("structured")
    assert rows[rows.method.str.startswith("LLM-Pruner")].ratio.isna().all(), "no baseline, not normalised"
    rows, base = paper.normalised("gguf")
    fp16 = rows[(rows.method == "Qwen2.5-0.5B") & (rows.method_scheme == "FP16")]
    assert fp16.ratio.iloc[0] == pytest.approx(1.0)
    assert set(paper.decoding_scores().columns) == {"model", "task", "decoder", "score"}


def test_our_runs_land_on_the_paper_axes():
    history = pd.DataFrame(
        [
            {"run_key": "a", "model": "m", "corpus": "news", "family": "quant", "label": "RTN w4", "ppl_ratio": 1.2,
             "spec_json": RunSpec("m", (QuantizeRTN(bits=4),)).to_json()},
            {"run_key": "b", "model": "m", "corpus": "news", "family": "prune", "label": "mag 50%", "ppl_ratio": 3.0,
             "achieved_sparsity": 0.5, "spec_json": RunSpec("m", (Prune(sparsity=0.5),)).to_json()},
        ]
    )  # fmt: skip
    quant = paper.our_points(history, "quant")
    assert list(quant.x) == [4.0] and list(quant.ratio) == [1.2]
    assert list(paper.our_points(history, "prune").x) == [0.5]


def test_our_runs_on_other_budgets_are_other_curves():
    spec = RunSpec("m", (QuantizeRTN(bits=4),)).to_json()
    history = pd.DataFrame(
        [{"run_key": k, "model": "m", "corpus": "news", "family": "quant", "label": "RTN w4", "ppl_ratio": 1.2,
          "token_budget": budget, "window_tokens": 512, "spec_json": spec}
         for k, budget in (("a", 1024), ("b", 4096))]
    )  # fmt: skip
    assert paper.our_points(history, "quant").series.nunique() == 2


def test_generations_show_special_tokens_as_markers_and_escape_the_rest():
    from dashboard import render

    page = render.side_by_side_html("Hi", ["there", "<|im_end|>"], ["<b>x</b>", "</s>"], 0, "RTN w4")
    assert "<|im_end|>" not in page and ">im_end</span>" in page and ">s</span>" in page
    assert "&lt;b&gt;x&lt;/b&gt;" in page, "ordinary text that looks like HTML stays text"


def test_sweep_specs_vary_one_field_and_name_the_refused_value():
    specs = sweeps.sweep_specs(
        "m", ProbeSettings(), QuantizeRTN(granularity="group", group_size=64), "bits", [8, 4]
    )
    assert [s.mods[0].bits for s in specs] == [8, 4] and all(s.mods[0].group_size == 64 for s in specs)
    with pytest.raises(SpecError, match="bits=1"):
        sweeps.sweep_specs("m", ProbeSettings(), QuantizeRTN(), "bits", [8, 1])
    assert sweeps.parse_values("8, 6,4", int) == [8, 6, 4]
    with pytest.raises(SpecError):
        sweeps.parse_values("8, six", int)


def test_headlines_show_the_size_number_the_run_reports():
    base = {
        "ppl_base": 10.0,
        "ppl": 12.0,
        "ppl_ratio": 1.2,
        "kl_mean": 0.1,
        "kl_p99": 1.0,
        "top1_agreement": 0.9,
    }
    assert runs.headlines({**base, "bits_per_weight": 4.25})[-1].value == "4.25"
    assert runs.headlines({**base, "achieved_sparsity": 0.3})[-1].value == "70.0%"
    assert runs.headlines({**base, "kl_mean": float("inf")})[1].value == "∞"
    assert len(runs.headlines(base)) == 3


def test_table_exports_round_trip_through_csv_and_parquet():
    import io

    from dashboard.widgets import parquet_bytes

    df = pd.DataFrame({"label": ["w4", "w8"], "ppl_ratio": [1.2, 1.0], "note": [None, {"mixed": 1}]})
    back = pd.read_parquet(io.BytesIO(parquet_bytes(df)))
    assert back.label.tolist() == ["w4", "w8"] and back.ppl_ratio.tolist() == [1.2, 1.0]
    assert pd.isna(back.note[0]) and back.note[1] == "{'mixed': 1}", (
        "mixed object columns are written as text"
    )


def test_the_app_keeps_one_runner_per_database_and_one_queue_per_process(tmp_path):
    from dashboard.state import get_runner

    db = str(tmp_path / "one.duckdb")
    plain, trusting = get_runner(db, False), get_runner(db, True)
    assert get_runner(db, False) is plain, "sessions share the runner (and its loaded models)"
    assert trusting is not plain and trusting.trust_remote_code and not plain.trust_remote_code
    assert trusting._compute is plain._compute, "computations of both runners queue on one lock"


# -- the pages ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def app_env(tmp_path_factory, tiny_llama_dir):
    """HEMLAB_* pointing at a tiny model and text inside allowed folders, for the whole module."""
    env = make_env(tmp_path_factory.mktemp("app"), tiny_llama_dir)
    with applied(env):
        yield env


def _app(page: str | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    if page:
        at.switch_page(page)
        at.run()
    return at


def _ok(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def _measured(at: AppTest, family: str) -> AppTest:
    """Press the family page's Measure button when the page waits for it (landing starts nothing)."""
    if any(b.key == f"{family}.measure" for b in at.button):
        at.button(key=f"{family}.measure").click().run()
    _ok(at)
    return at


def _stored_specs(env) -> list[dict]:
    return [json.loads(s) for s in Store(env["HEMLAB_DB"]).runs().get("spec_json", [])]


def _key(env, spec: RunSpec) -> str:
    """The run key the app stores `spec` under (the same cache key the runner computes)."""
    from hemorrhage_core.runner import Runner

    return Runner(Store(env["HEMLAB_DB"])).cache_key(spec)[0]


def _probe(env) -> ProbeSettings:
    return ProbeSettings(corpus=env["HEMLAB_DEFAULT_CORPUS"], tokens=256, window=64)


def test_quantize_page_profiles_the_default_and_sliders_drive_the_spec(app_env):
    at = _app()  # the default page
    _ok(at)
    assert at.title[0].value == "Quantize"
    _measured(at, "quant")
    assert len(at.get("plotly_chart")) == 4
    assert [m.label for m in at.metric][:3] == ["Perplexity ratio", "KL mean (nats)", "Top-1 agreement"]
    at.slider(key="quant.quant_rtn.bits").set_value(3)
    at.radio(key="quant.quant_rtn.granularity").set_value("group")
    at.run()
    _ok(at)
    at.select_slider(key="quant.quant_rtn.group_size").set_value(32)
    at.run()
    _ok(at)
    expected = QuantizeRTN(bits=3, granularity="group", group_size=32)
    assert {"kind": "quant_rtn", **expected.to_dict()} in [
        m for s in _stored_specs(app_env) for m in s["mods"]
    ]
    assert any("RTN w3 sym g32" in c.value for c in at.caption)
    assert any(m.label == "Bits per weight" for m in at.metric)


FAMILY_PAGES = {"quant": "pages/quantize.py", "prune": "pages/prune.py", "decode": "pages/decode.py",
                "depth": "pages/depth.py", "gguf": "pages/gguf.py"}  # fmt: skip


@pytest.fixture
def counted(monkeypatch):
    """Every Runner.run and Runner._compute_run call of the app, in order."""
    from hemorrhage_core.runner import Runner

    calls: list[str] = []
    run, compute = Runner.run, Runner._compute_run

    def counted_run(self, *args, **kwargs):
        calls.append("run")
        return run(self, *args, **kwargs)

    def counted_compute(self, *args, **kwargs):
        calls.append("compute")
        return compute(self, *args, **kwargs)

    monkeypatch.setattr(Runner, "run", counted_run)
    monkeypatch.setattr(Runner, "_compute_run", counted_compute)
    return calls


def test_landing_on_any_family_page_starts_nothing_and_a_stored_default_is_shown(
    tmp_path, tiny_llama_dir, counted
):
    with applied(make_env(tmp_path, tiny_llama_dir)):  # a database of its own: nothing stored yet
        for family, page in FAMILY_PAGES.items():
            at = _app(page)
            _ok(at)
            assert counted == [], f"landing on {page} started a computation"
            assert any(b.key == f"{family}.measure" for b in at.button), page
            assert any("press Measure" in i.value for i in at.info), page
            assert not at.metric and not at.get("plotly_chart")
            names = at.selectbox(key=f"{family}.method").options  # what the picker shows, formatted
            assert names and not any("_" in n or "—" in n or n.endswith("…") for n in names), (page, names)
        at = _app("pages/mitigate.py")
        _ok(at)
        assert counted == []
        at = _measured(_app(), "quant")  # the call to action measures the default ...
        assert counted == ["run", "compute"] and len(at.get("plotly_chart")) == 4
        again = _app()  # ... and a new session landing on the page shows it without computing
        _ok(again)
        assert counted == ["run", "compute"]
        assert not any(b.key == "quant.measure" for b in again.button)
        assert [m.label for m in again.metric][:3] == [
            "Perplexity ratio",
            "KL mean (nats)",
            "Top-1 agreement",
        ]
        assert len(again.get("plotly_chart")) == 4


def test_decode_page_starts_at_a_real_change_without_touching_the_specs(tmp_path, tiny_llama_dir, counted):
    with applied(make_env(tmp_path, tiny_llama_dir)) as env:
        at = _app("pages/decode.py")
        _ok(at)
        assert at.slider(key="decode.temperature.value").value == pytest.approx(0.7)
        assert any("**T=0.7** is not measured yet" in i.value for i in at.info), [i.value for i in at.info]
        assert counted == [], "landing on Decode started a computation"
        # The start is the page's, not the spec's: T = 1 keeps its default and every stored key stays put.
        assert Temperature().value == 1.0 and Sampler().top_p == 1.0
        at = _measured(at, "decode")
        assert counted == ["run", "compute"]
        stored = [m for s in _stored_specs(env) for m in s["mods"]]
        assert stored == [{"kind": "temperature", **Temperature(value=0.7).to_dict()}]
        again = _app("pages/decode.py")  # a new session shows the stored start without computing
        _ok(again)
        assert counted == ["run", "compute"] and again.metric
        again.selectbox(key="decode.method").set_value(
            "sampler"
        ).run()  # a change: an instant method measures
        _ok(again)
        assert again.slider(key="decode.sampler.top_p").value == pytest.approx(0.9)
        assert any("T=0.7" in c.value and "0.9" in c.value for c in again.caption), [
            c.value for c in again.caption
        ]


def test_calibrated_settings_wait_for_measure_even_after_a_change(tmp_path, tiny_llama_dir, counted):
    with applied(make_env(tmp_path, tiny_llama_dir)):
        at = _app("pages/prune.py")
        at.slider(key="prune.prune.sparsity").set_value(0.4).run()  # the user touched a widget: instant runs
        _ok(at)
        assert counted == ["run", "compute"]
        at.selectbox(key="prune.prune.method").set_value("wanda").run()
        _ok(at)
        assert counted == ["run", "compute"], "a calibrated setting never starts on a change"
        assert any("calibrates on text" in i.value for i in at.info)


def test_gguf_page_says_how_to_build_the_tools_and_measures_a_pure_type(app_env, monkeypatch):
    monkeypatch.setenv("HEMLAB_LLAMA_BIN", "/nonexistent")  # as on a machine where they were never built
    at = _app("pages/gguf.py")
    _ok(at)
    assert at.title[0].value == "GGUF"
    assert any("make llama-tools" in w.value for w in at.warning)
    assert any(b.key == "gguf.build_tools" for b in at.button)
    # Without an importance matrix no text is read: the wait says what really takes the minutes.
    assert any("rebuilds the model" in i.value for i in at.info) and not any(
        "on text" in i.value for i in at.info
    )
    at.checkbox(key="gguf.gguf.imatrix").check().run()
    assert any("calibrates on text" in i.value for i in at.info)
    at.checkbox(key="gguf.gguf.imatrix").uncheck().run()
    at.button(
        key="gguf.measure"
    ).click().run()  # the default Q4_K_M needs llama-quantize: a message, no traceback
    _ok(at)
    assert any("llama-quantize is not built" in e.value and "make llama-tools" in e.value for e in at.error)
    at.selectbox(key="gguf.gguf.qtype").set_value("Q8_0")
    at.checkbox(key="gguf.gguf.pure").check()
    at.run()
    _measured(at, "gguf")
    assert any(m.label == "Bits per weight" for m in at.metric)
    assert {"kind": "gguf", **GGUFQuant(qtype="Q8_0", pure=True).to_dict()} in [
        m for s in _stored_specs(app_env) for m in s["mods"]
    ]


def test_group_size_is_disabled_unless_scales_are_per_group(app_env):
    at = _app()
    assert at.select_slider(key="quant.quant_rtn.group_size").disabled
    at.radio(key="quant.quant_rtn.granularity").set_value("group").run()
    assert not at.select_slider(key="quant.quant_rtn.group_size").disabled


def test_prune_page_reports_parameters_left(app_env):
    at = _app("pages/prune.py")
    _ok(at)
    at.slider(key="prune.prune.sparsity").set_value(0.3).run()
    _ok(at)
    kept = [m for m in at.metric if m.label == "Weights kept"]
    assert kept and float(kept[0].value.rstrip("%")) == pytest.approx(
        70.0, abs=1.0
    )  # per-row rounding on 64 inputs
    assert len(at.get("plotly_chart")) == 4


def test_decode_page_and_stacking_chains_the_other_pages(app_env):
    at = _app()
    at.slider(key="quant.quant_rtn.bits").set_value(6).run()
    at.switch_page("pages/decode.py").run()
    _ok(at)
    at.slider(key="decode.temperature.value").set_value(1.5).run()
    _ok(at)
    at.toggle(key="decode.stack").set_value(True).run()
    _ok(at)
    chains = [[m["kind"] for m in s["mods"]] for s in _stored_specs(app_env)]
    assert ["quant_rtn", "temperature"] in chains, "stacking applies weights first, decoding last"
    assert any("Chain: RTN w6 sym channel → T=1.5" in c.value for c in at.caption)


def test_decode_page_shows_what_a_sampler_changes_and_explains_infinity(app_env):
    at = _app("pages/decode.py")
    at.selectbox(key="decode.method").set_value("top_k").run()
    _ok(at)
    specs = [c.proto.spec for c in at.get("plotly_chart")]
    assert len(specs) == 2, "the decoding measures and the perplexity bars, nothing per layer or head"
    assert "What the sampler changes" in specs[0] and "Attention disruption" not in " ".join(specs)
    assert any("Why ∞" in i.value for i in at.info)
    labels = [m.label for m in at.metric]
    assert "Reverse KL mean (nats)" in labels and "Probability mass cut" in labels, labels
    measures = at.dataframe[0].value
    assert "entropy (nats)" in set(measures.measure) and "mass cut" in set(measures.measure), (
        "registry headers"
    )
    at.switch_page("pages/quantize.py").run()
    assert len(at.get("plotly_chart")) == 4, "a weight change keeps the per-layer and attention charts"


def test_decode_page_compares_generations_on_click_with_a_divergence_measure(app_env):
    at = _app("pages/decode.py")
    at.selectbox(key="decode.method").set_value("top_k").run()
    _ok(at)
    charts_before = len(at.get("plotly_chart"))
    assert not at.get("html") and any("Press Generate" in i.value for i in at.info), (
        "nothing generated on landing"
    )
    assert at.radio(key="decode-generation.mode").value == "sampled", (
        "a sampler keeps greedy decoding as it was"
    )
    at.slider(key="decode-generation.tokens").set_value(8)
    [b for b in at.button if b.proto.label == "Generate"][0].click().run()
    _ok(at)
    assert not at.error, [e.value for e in at.error]
    page = " ".join(h.proto.body for h in at.get("html"))
    assert "first divergence at generated token" in page or "identical for all 8" in page
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Identical tokens"].endswith("of 8")
    assert metrics["KL per step (nats)"] == "∞", (
        "top-k cuts tokens the original can emit: infinite by definition"
    )
    assert "Reverse KL per step (nats)" in metrics and "Probability mass cut" in metrics
    steps = at.get("plotly_chart")[charts_before].proto.spec
    assert "reverse KL" in steps and "KL(modified \\u2016 original)" in steps, (
        "the finite divergence is drawn"
    )


def test_impossible_settings_are_shown_not_raised(app_env):
    at = _app("pages/depth.py")
    _ok(at)
    at.selectbox(key="depth.method").set_value("remove_layers").run()
    _ok(at)
    assert at.error and "remove_layers" in at.error[0].value
    at.text_input(key="depth.remove_layers.layers").set_value("0, x").run()
    _ok(at)
    assert "integers" in at.error[0].value
    at.text_input(key="depth.remove_layers.layers").set_value("1").run()
    _ok(at)
    assert not at.error and len(at.get("plotly_chart")) == 4
    assert [{"kind": "remove_layers", "layers": [1]}] in [s["mods"] for s in _stored_specs(app_env)]


def test_cancelled_run_is_not_restarted_or_stored(app_env):
    at = _app("pages/prune.py")
    spec = RunSpec(app_env["HEMLAB_DEFAULT_MODEL"], (Prune(sparsity=0.65),), _probe(app_env))
    key = _key(app_env, spec)
    at.session_state["hemlab.cancelled"] = key
    at.slider(key="prune.prune.sparsity").set_value(0.65).run()
    _ok(at)
    assert any("Cancelled" in w.value for w in at.warning)
    assert not Store(app_env["HEMLAB_DB"]).has_run(key)
    at.button(key="prune-run-resume").click().run()
    _ok(at)
    assert not at.error and not at.warning, [m.value for m in (*at.error, *at.warning)]
    assert Store(app_env["HEMLAB_DB"]).has_run(key)


def test_model_page_refuses_outside_folders_and_warns_about_remote_code(app_env, tmp_path, monkeypatch):
    # The checkbox exists only where the operator allows it.
    monkeypatch.setenv("HEMLAB_ALLOW_REMOTE_CODE", "1")
    at = _app("pages/model.py")
    _ok(at)
    assert any(m.label == "Parameters" for m in at.metric)
    at.checkbox(key="model.trust").check().run()
    assert any("Remote code" in w.value for w in at.warning)
    at.radio(key="model.source").set_value("local folder or hub id…").run()
    outside = tmp_path / "m"
    outside.mkdir()
    at.text_input(key="model.custom").set_value(str(outside)).run()
    _ok(at)
    assert "outside the folders" in at.error[0].value


def test_remote_code_is_offered_only_where_the_operator_allows_it(app_env, monkeypatch):
    from dashboard.state import _SELECTION, Selection

    monkeypatch.delenv("HEMLAB_ALLOW_REMOTE_CODE", raising=False)
    at = _app("pages/model.py")
    _ok(at)
    assert not any(c.key == "model.trust" for c in at.checkbox), "off by default: no checkbox"
    assert any("HEMLAB_ALLOW_REMOTE_CODE" in c.value for c in at.caption)
    # A session that chose remote code before the operator turned it off no longer has it.
    sel = at.session_state[_SELECTION]
    at.session_state[_SELECTION] = Selection(**{**sel.__dict__, "trust_remote_code": True})
    at.run()
    assert not at.session_state[_SELECTION].trust_remote_code
    monkeypatch.setenv("HEMLAB_ALLOW_REMOTE_CODE", "1")
    at.run()
    assert any(c.key == "model.trust" for c in at.checkbox)


def test_model_policy_turns_unreadable_names_into_messages(tmp_path):
    allowed = [tmp_path]
    loop = tmp_path / "loop"
    loop.symlink_to(tmp_path / "loop2")
    (tmp_path / "loop2").symlink_to(loop)
    assert "cannot be read" in model_problem(str(loop), allowed)
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").symlink_to(folder / "config.json")  # a link to itself
    assert model_problem(str(folder), allowed)  # a message, whichever one, never an exception
    assert "characters long" in model_problem("x" * 5000, allowed)
    assert "characters long" in model_problem("/" + "y" * 5000, allowed)


def test_sidebar_shows_the_budget_just_chosen_on_the_model_page(app_env):
    at = _app("pages/model.py")
    at.select_slider(key="model.tokens").set_value(512).run()
    _ok(at)
    assert any("512 tokens" in c.value for c in at.sidebar.caption), [c.value for c in at.sidebar.caption]
    at.select_slider(key="model.tokens").set_value(256).run()


def test_model_page_edits_the_attention_probe_set_and_refuses_one_too_large(app_env):
    from dashboard.state import _SELECTION

    at = _app("pages/model.py")
    at.number_input(key="model.attn_probes").set_value(2).run()
    at.select_slider(key="model.attn_len").set_value(64).run()
    _ok(at)
    sel = at.session_state[_SELECTION]
    assert (sel.probe().attn_probes, sel.probe().attn_len) == (2, 64)
    at.number_input(key="model.attn_probes").set_value(16).run()
    at.select_slider(key="model.attn_len").set_value(256).run()
    _ok(at)
    assert any("too large" in e.value for e in at.error)


def test_model_page_states_how_the_model_is_measured(app_env):
    at = _app("pages/model.py")
    _ok(at)
    captions = " ".join(c.value for c in at.caption)
    assert "Self-check against the model's own forward" in captions and "blocks `model.layers`" in captions


def test_model_page_shows_bad_uploads_and_offline_hub_ids_as_messages(app_env):
    at = _app("pages/model.py")
    at.radio(key="model.corpus").set_value("upload a text file…").run()
    at.file_uploader(key="model.upload").set_value(("bad.txt", b"\x00\xff\x00binary", "text/plain")).run()
    _ok(at)
    assert any("Cannot use this upload" in e.value for e in at.error)
    at.file_uploader(key="model.upload").set_value(("good.txt", b"plain words " * 500, "text/plain")).run()
    _ok(at)
    assert any("good.txt" in c.value for c in at.caption)
    at.radio(key="model.source").set_value("local folder or hub id…").run()
    at.text_input(key="model.custom").set_value("no-such-org/no-such-model-hemlab").run()
    _ok(at)
    assert at.error, "an unreachable hub id is a message on the page"


def test_a_model_too_big_for_the_machine_is_a_message(app_env, monkeypatch):
    from hemorrhage_core import models

    copy = Path(app_env["HEMLAB_DEFAULT_MODEL"]).with_name("tiny-llama-copy")  # not yet loaded by the runner
    if not copy.exists():
        __import__("shutil").copytree(app_env["HEMLAB_DEFAULT_MODEL"], copy)
    monkeypatch.setattr(models.devices, "_available_bytes", lambda device: 1024)  # a machine with 1 KiB free
    at = _app("pages/model.py")
    at.radio(key="model.source").set_value("local folder or hub id…").run()
    at.text_input(key="model.custom").set_value(str(copy)).run()
    _ok(at)
    assert "too big for this machine" in at.error[0].value


def test_analysis_pages_draw_stored_runs(app_env):
    at = _measured(_app(), "quant")  # makes sure at least one run is stored
    for page, charts in [("pages/layers.py", 1), ("pages/attention.py", 1), ("pages/divergence.py", 3)]:
        at.switch_page(page).run()
        _ok(at)
        assert len(at.get("plotly_chart")) >= charts, page
    at.switch_page("pages/attention.py").run()
    layer = at.selectbox(key=[w.key for w in at.selectbox if w.key.startswith("attention.layer")][0])
    assert layer.value in (0, 1)


def test_divergence_page_generates_side_by_side_with_the_divergence_marked(app_env):
    at = _app()
    at.slider(key="quant.quant_rtn.bits").set_value(2).run()  # a run that surely changes the continuation
    at.switch_page("pages/divergence.py").run()
    _ok(at)
    charts_before = len(at.get("plotly_chart"))
    at.radio(key="divergence.mode").set_value("sampled")
    at.number_input(key="divergence.seed").set_value(3)
    at.slider(key="divergence.tokens").set_value(8)
    at.button[0].click().run()  # the form's Generate button
    _ok(at)
    assert not at.error, [e.value for e in at.error]
    page = " ".join(h.proto.body for h in at.get("html"))
    assert "original" in page and (
        "first divergence at generated token" in page or "identical for all 8" in page
    )
    assert len(at.get("plotly_chart")) == charts_before + 1, "the per-step KL chart"


def test_layers_page_ranks_the_modules_on_demand_and_stores_the_ranking(app_env):
    pytest.importorskip("hemorrhage_core.analysis.modules")
    at = _app()
    at.slider(key="quant.quant_rtn.bits").set_value(4).run()
    at.switch_page("pages/layers.py").run()
    _ok(at)
    at.button(key="layers.rank").click().run()
    _ok(at)
    assert len(at.get("plotly_chart")) == 2, "the cascade and the module ranking"
    spec = RunSpec(app_env["HEMLAB_DEFAULT_MODEL"], (QuantizeRTN(bits=4),), _probe(app_env))
    assert not Store(app_env["HEMLAB_DB"]).analysis(_key(app_env, spec), "module_errors").empty
    at.switch_page("pages/layers.py").run()  # a revisit reads the stored ranking: no button
    assert not any(b.key == "layers.rank" for b in at.button) and len(at.get("plotly_chart")) == 2


def test_attention_page_draws_original_modified_and_difference_maps(app_env):
    pytest.importorskip("hemorrhage_core.analysis.attention")
    at = _app()
    at.slider(key="quant.quant_rtn.bits").set_value(2).run()
    at.switch_page("pages/attention.py").run()
    _ok(at)
    at.text_area(key="attention.prompt").set_value("the quick brown fox jumps over the lazy dog")
    at.button[0].click().run()  # the form's submit button
    _ok(at)
    assert len(at.get("plotly_chart")) == 2, "the heatmap and the three maps"
    assert at.get("plotly_chart")[1].proto.spec.count("query token") >= 1


@pytest.mark.parametrize("sample", [False, True])
def test_side_by_side_and_step_rows_describe_the_same_rollout(app_env, sample):
    from hemorrhage_core.generation import prompt_generations
    from hemorrhage_core.runner import Runner

    runner = Runner(Store(":memory:"), device="cpu")
    spec = RunSpec(app_env["HEMLAB_DEFAULT_MODEL"], (QuantizeRTN(bits=2),), _probe(app_env))
    gen = prompt_generations(runner, spec, "the quick brown fox", seed=5, sample=sample, max_new_tokens=12)
    assert len(gen.side.base_tokens) == len(gen.side.mod_tokens) == 12 == len(gen.steps)
    same = gen.steps.sort_values("step").same_token.tolist()
    first = same.index(False) if False in same else None
    assert gen.side.first_divergence == first, "the highlighted token is the rollout's first divergence"
    assert gen.side.base_ids[: first or 12] == gen.side.mod_ids[: first or 12]


def test_divergence_page_counts_cloze_flips_and_stores_them(app_env):
    pytest.importorskip("hemorrhage_core.analysis.flips")
    at = _app()
    at.slider(key="quant.quant_rtn.bits").set_value(2).run()
    at.switch_page("pages/divergence.py").run()
    at.slider(key="divergence.flip_items").set_value(16)
    submit = [b for b in at.button if b.proto.label == "Count the flips"]
    submit[0].click().run()  # the test corpus is random words without sentences: no cloze items
    _ok(at)
    assert "cloze set failed" in at.error[0].value and "cloze items" in at.error[0].value
    at.selectbox(key="divergence.flip_corpus").set_value("news")
    [b for b in at.button if b.proto.label == "Count the flips"][0].click().run()
    _ok(at)
    labels = {m.label: m.value for m in at.metric}
    assert {"Accuracy, original", "Accuracy, modified", "Flips", "Answers changed"} <= set(labels)
    spec = RunSpec(app_env["HEMLAB_DEFAULT_MODEL"], (QuantizeRTN(bits=2),), _probe(app_env))
    stored = Store(app_env["HEMLAB_DB"]).analysis(_key(app_env, spec), "flips")
    assert set(stored.metric) >= {"accuracy_base", "flips", "n_items"}


def test_sweep_page_runs_a_sweep_and_draws_the_curve(app_env):
    at = _app("pages/sweeps.py")
    _ok(at)
    at.text_input(key="sweep.quant_rtn.bits.values").set_value("8, 5").run()
    at.button(key="sweep.go").click().run()
    _ok(at)
    bits = {m["bits"] for s in _stored_specs(app_env) for m in s["mods"] if m["kind"] == "quant_rtn"}
    assert {8, 5} <= bits
    assert len(at.get("plotly_chart")) >= 1
    thresholds = at.dataframe[0].value  # the thresholds of each curve, from analysis.thresholds
    assert "first over 1.1×" in thresholds.columns and len(thresholds) >= 1
    at.text_input(key="sweep.quant_rtn.bits.values").set_value("8, 1").run()
    _ok(at)
    assert "bits=1" in at.error[0].value


def test_compare_page_overlays_reports_and_deletes(app_env):
    at = _measured(_app(), "quant")  # stores the default quantization run ...
    _measured(at.switch_page("pages/prune.py").run(), "prune")  # ... and a pruning run: two to compare
    at.switch_page("pages/compare.py").run()
    _ok(at)
    before = len(Store(app_env["HEMLAB_DB"]).runs())
    assert before >= 2
    assert list(at.dataframe[0].value.columns) == compare_shown()
    at.multiselect(key="compare.pick").set_value(_run_keys(app_env)[:2]).run()
    _ok(at)
    assert len(at.get("plotly_chart")) == 3
    assert [b.label for b in at.get("download_button") if b.label.startswith("Report")] == [
        "Report (HTML)",
        "Report (PDF)",
    ]
    at.checkbox(key="compare.sure").check().run()
    at.button(key="compare.delete").click().run()
    _ok(at)
    assert len(Store(app_env["HEMLAB_DB"]).runs()) == before - 2
    assert any("Deleted 2" in s.value for s in at.success)


def compare_shown() -> list[str]:
    from dashboard.compare import SHOWN

    return SHOWN


def _run_keys(env) -> list[str]:
    return Store(env["HEMLAB_DB"]).runs().run_key.tolist()


def test_paper_page_draws_every_table_with_its_citation(app_env):
    at = _app("pages/paper.py")
    _ok(at)
    assert "arXiv:2503.23924" in at.info[0].value
    for key in paper.TABLES:
        at.radio(key="paper.table").set_value(key).run()
        _ok(at)
        assert len(at.get("plotly_chart")) >= 1, key


def test_mitigate_page_repairs_one_explicit_chain_and_names_what_each_remedy_runs(app_env):
    at = _app()  # the Quantize page remembers its setting ...
    at.switch_page("pages/prune.py").run()  # ... and so does Prune
    at.switch_page("pages/mitigate.py").run()
    _ok(at)
    source = at.selectbox(key="mitigate.source")
    assert source.value == "page:prune", "one page's own setting by default, never every page stacked"
    assert any(o.startswith("all pages stacked: ") for o in source.options), "stacking is an explicit choice"
    source.set_value("RTN 4-bit per-channel").run()
    _ok(at)
    remedies = next(m for m in at.multiselect if m.key.startswith("mitigate.remedies."))
    assert any("dynamic quantization scaling — runs AWQ w4" in o for o in remedies.options), remedies.options


def test_mitigate_page_measures_a_remedy_and_headlines_the_recovery(app_env):
    at = _app("pages/mitigate.py")
    _ok(at)
    assert at.title[0].value == "Mitigate"
    at.selectbox(key="mitigate.source").set_value("magnitude 50%").run()
    _ok(at)
    remedies = at.multiselect(
        key="mitigate.remedies.gradient-aware pruning|KL distillation (norms)|decoding calibration"
    )
    remedies.set_value(["decoding calibration"]).run()
    _ok(at)
    assert any("After: magnitude 50% → calibrate T" in c.value for c in at.caption)
    assert not at.metric, "remedies calibrate or train: nothing runs before Measure"
    at.button(key="mitigate.measure").click().run()
    _ok(at)
    recovered = {m.label: m.value for m in at.metric}
    for label in ("Perplexity damage recovered", "KL damage recovered"):
        value = recovered[label]
        assert value == "n/a" or -10 < float(value.rstrip("%")) < 1000, value
    assert recovered["KL damage recovered"] != "n/a", "magnitude 50% damages the tiny model's predictions"
    assert len(at.get("plotly_chart")) == 4
    chains = [[m["kind"] for m in s["mods"]] for s in _stored_specs(app_env)]
    assert ["prune"] in chains and ["prune", "calibrate_decoding"] in chains
    # Stored: the page shows the comparison again without measuring.
    again = _app("pages/mitigate.py")
    again.selectbox(key="mitigate.source").set_value("magnitude 50%").run()
    again.multiselect(key=remedies.key).set_value(["decoding calibration"]).run()
    _ok(again)
    assert any(m.label == "KL damage recovered" for m in again.metric)
