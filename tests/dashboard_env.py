"""The environment the dashboard tests run the app in: a tiny model and a text file inside allowed folders, and a
private results database and cache, all under one temporary root (shared by test_app.py and test_browser.py)."""

from __future__ import annotations

import os
import random
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# A small vocabulary the tiny tokenizer encodes compactly; 6,000 random draws give a few thousand tokens.
SENTENCE = (
    "the quick brown fox jumps over the lazy dog while seven wizards quietly judge boxing matches and a calm "
    "river carries old leaves toward the distant sea as the news of the day travels from town to town"
)


def make_env(root: Path, tiny_model_dir: Path) -> dict[str, str]:
    """Copy the tiny model into `root/models`, write a text corpus into `root/texts`, and return the HEMLAB_*
    variables that point the app at them (uploads go to `root/uploads`; budget 256 tokens in windows of 64)."""
    models, texts, uploads = root / "models", root / "texts", root / "uploads"
    for d in (models, texts, uploads):
        d.mkdir(parents=True, exist_ok=True)
    model = models / "tiny-llama"
    if not model.exists():
        shutil.copytree(tiny_model_dir, model)
    text = texts / "words.txt"
    rng, words = random.Random(0), SENTENCE.split()
    text.write_text(" ".join(rng.choice(words) for _ in range(6000)))
    return {
        "HEMLAB_DB": str(root / "results.duckdb"),
        "HEMLAB_CACHE": str(root / "cache"),
        "HEMLAB_DATA": str(root / "data"),
        "HEMLAB_ALLOWED_DIRS": ":".join(map(str, (uploads, models, texts))),
        "HEMLAB_DEFAULT_MODEL": str(model),
        "HEMLAB_DEFAULT_CORPUS": str(text),
        "HEMLAB_DEFAULT_TOKENS": "256",
        "HEMLAB_DEFAULT_WINDOW": "64",
    }


@contextmanager
def applied(env: dict[str, str]) -> Iterator[dict[str, str]]:
    """`env` set in os.environ for the body (AppTest pages read it), the previous values restored after."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield env
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
