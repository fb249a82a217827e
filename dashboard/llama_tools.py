"""The llama.cpp tools on the GGUF page: whether they are built, and a button that builds them (no torch).

Without them the page still measures the types the `gguf` Python package writes (pure Q4_0, Q4_1, Q5_0, Q5_1,
Q8_0 and F16); everything else says, before any work, that `make llama-tools` builds them, and this button runs
the same script with its progress on the page.
"""

from __future__ import annotations

import subprocess

import streamlit as st

from hemorrhage_core import llamacpp


def tools_notice() -> None:
    """A warning with the build button when the tools are missing; nothing when they are built."""
    if llamacpp.available():
        return
    st.warning(
        llamacpp.missing_message(
            why="llama.cpp's tensor mixes, K-quants, IQ types and importance matrices need them"
        )
        + ". Without them, pure legacy types (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 with pure on) and F16 still work."
    )
    if not st.button("Build the llama.cpp tools now (several CPU-minutes)", key="gguf.build_tools"):
        return
    lines: list[str] = []
    with st.status("Building llama-quantize, llama-imatrix and llama-perplexity…", expanded=True) as status:
        shown = st.empty()
        with subprocess.Popen(
            llamacpp.build_command(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
        ) as proc:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.append(line.rstrip("\n"))
                shown.code("\n".join(lines[-12:]))
            rc = proc.wait()
        if rc == 0 and llamacpp.available():
            status.update(label="llama.cpp tools built", state="complete")
        else:
            status.update(label=f"the build failed (exit {rc}): see its last lines", state="error")
