"""Shared fixtures: tiny random Llama- and GPT-2-style model folders that ``load_model`` accepts, built offline.

The tokenizer is a byte-level BPE trained on a fixed paragraph (`hemorrhage_core.archs.build_tokenizer`), so it
encodes any text (no unknown tokens) and needs no network. Weights are random but seeded, so every session builds
identical folders.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch

# The tokenizer builder lives in the library (the architecture matrix builds its tiny models with it); re-exported
# here for the tests that import it from conftest.
from hemorrhage_core.archs import EOS, TOKENIZER_TEXT, build_tokenizer  # noqa: F401


def _save(model, tokenizer, folder: Path) -> Path:
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_tokenizer():
    return build_tokenizer()


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory, tiny_tokenizer) -> Path:
    """Folder with a 2-layer Llama (d=64, 4 heads / 2 KV heads, tied embeddings) + tokenizer, safetensors."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tiny_tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=tiny_tokenizer.bos_token_id,
        eos_token_id=tiny_tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    return _save(LlamaForCausalLM(config), tiny_tokenizer, tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_gpt2_dir(tmp_path_factory, tiny_tokenizer) -> Path:
    """Folder with a 2-layer GPT-2 (d=64, 4 heads, Conv1D weights, tied embeddings) + tokenizer, safetensors."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=len(tiny_tokenizer),
        n_layer=2,
        n_embd=64,
        n_head=4,
        n_positions=512,
        bos_token_id=tiny_tokenizer.bos_token_id,
        eos_token_id=tiny_tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    return _save(GPT2LMHeadModel(config), tiny_tokenizer, tmp_path_factory.mktemp("tiny-gpt2"))


@pytest.fixture(scope="session")
def word_text(tmp_path_factory):
    """Factory: a text file of `n_words` words drawn (seeded) from `words`, a corpus for tiny-model runs.

    Returns the file's path as a string, the form `ProbeSettings.corpus` takes.
    """

    def make(words: Sequence[str], n_words: int, *, seed: int = 0, name: str = "text.txt") -> str:
        rng = random.Random(seed)
        path = tmp_path_factory.mktemp("corpus") / name
        path.write_text(" ".join(rng.choice(words) for _ in range(n_words)))
        return str(path)

    return make


@pytest.fixture(scope="session")
def text_file(word_text) -> str:
    """The corpus of tiny-model runs: 8,000 words drawn (seeded) from one sentence's vocabulary (dashboard_env's,
    which the dashboard tests use too)."""
    from dashboard_env import SENTENCE

    return word_text(SENTENCE.split(), 8000)


@pytest.fixture
def runner(tmp_path, monkeypatch):
    """A Runner on a fresh DuckDB file, its reference cache in the test's tmp folder (nothing shared)."""
    from hemorrhage_core.runner import Runner
    from hemorrhage_core.store import Store

    monkeypatch.setenv("HEMLAB_CACHE", str(tmp_path / "cache"))
    return Runner(Store(tmp_path / "r.duckdb"), device="cpu")
