"""Shared fixtures: tiny random Llama- and GPT-2-style model folders that ``load_model`` accepts, built offline.

The tokenizer is a byte-level BPE trained here on a fixed paragraph, so it encodes any text (no unknown
tokens) and needs no network. Weights are random but seeded, so every session builds identical folders.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch

TOKENIZER_TEXT = """
Hemorrhage Lab measures how much a language model bleeds when it is quantized, pruned, cut or decoded
differently. The quick brown fox jumps over the lazy dog while seven wizards quietly judge boxing matches.
A calm river carries old leaves toward the distant sea, and the news of the day travels from town to town.
Numbers such as 1, 2, 3, 42, 1999 and 2024 appear in text; so do punctuation marks: commas, colons; quotes "".
"""
EOS = "<|endoftext|>"


def build_tokenizer(vocab_size: int = 384):
    """A PreTrainedTokenizerFast (byte-level BPE) with EOS = BOS = ``<|endoftext|>`` and no pad token,
    so loaders must supply one. It adds no special tokens to encoded text, like GPT-2's."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([TOKENIZER_TEXT] * 4, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=EOS, eos_token=EOS)


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


@pytest.fixture
def runner(tmp_path, monkeypatch):
    """A Runner on a fresh DuckDB file, its reference cache in the test's tmp folder (nothing shared)."""
    from hemorrhage_core.runner import Runner
    from hemorrhage_core.store import Store

    monkeypatch.setenv("HEMLAB_CACHE", str(tmp_path / "cache"))
    return Runner(Store(tmp_path / "r.duckdb"), device="cpu")
