"""Task names -> entries: the built-in tasks, and user tasks named by their entry file's path."""

from __future__ import annotations

from pathlib import Path

from ..errors import TaskError
from .builtin import BUILTIN
from .entry import ENTRY_SUFFIXES, TaskEntry, load_entry_file

TASKS: dict[str, TaskEntry] = {e.name: e for e in BUILTIN}


def get_task(name_or_path: str) -> TaskEntry:
    """A built-in task by name, or a user task from a .json / .toml entry file."""
    name = name_or_path.strip()
    if name in TASKS:
        return TASKS[name]
    path = Path(name).expanduser()
    if path.suffix.lower() in ENTRY_SUFFIXES:
        if not path.is_file():
            raise TaskError(f"task entry file {name!r} does not exist")
        return load_entry_file(path)
    raise TaskError(
        f"unknown task {name!r}; built-in: {', '.join(TASKS)} (see `hemlab tasks`), or a task entry file "
        f"ending in {' / '.join(ENTRY_SUFFIXES)}"
    )


def parse_tasks(text: str) -> tuple[TaskEntry, ...]:
    """'arc_easy,hellaswag,my_task.toml' -> entries, in order, each once."""
    names = list(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    if not names:
        raise TaskError("--tasks names no task; give one or more, separated by commas (see `hemlab tasks`)")
    entries = [get_task(n) for n in names]
    seen: dict[str, str] = {}
    for n, e in zip(names, entries, strict=True):
        if e.name in seen and seen[e.name] != n:
            raise TaskError(f"--tasks names two tasks called {e.name!r} ({seen[e.name]} and {n})")
        seen[e.name] = n
    return tuple(entries)
