"""Model registry, preparation and loading. Fast: tiny models from configs; the real model only under -m slow."""

from __future__ import annotations

import hashlib
import os
import shutil

import pytest
import torch

from hemorrhage_core import models
from hemorrhage_core.errors import ModelError
from hemorrhage_core.models import (
    DEFAULT_MODEL,
    EMBEDDED,
    EmbeddedModel,
    LoadedModel,
    is_prepared,
    load_model,
    model_info,
    prepare_embedded,
    resolve_device,
)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty model cache, so preparation tests never touch the real one."""
    monkeypatch.setenv("HEMLAB_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


# -- registry ------------------------------------------------------------------------------------------------


def test_registry_has_both_baselines_with_the_gguf_caveat():
    assert DEFAULT_MODEL == "smollm2-135m"
    assert set(EMBEDDED) == {"smollm2-135m", "gemma3-270m"}
    for m in EMBEDDED.values():
        assert "4-bit" in m.baseline_note and "fp32" in m.baseline_note
        assert m.licence and m.architecture.endswith("ForCausalLM")


def test_unknown_plain_name_lists_the_embedded_models():
    with pytest.raises(ModelError) as err:
        load_model("no-such-model")
    assert "smollm2-135m" in str(err.value) and "gemma3-270m" in str(err.value)


def test_unreachable_hub_id_becomes_a_model_error(monkeypatch):
    monkeypatch.setattr(models.loading, "_hub_reachable", lambda: False)
    with pytest.raises(ModelError) as err:
        load_model("no-such-org/no-such-model-hemlab")
    message = str(err.value)
    assert "hub could not be reached" in message and "smollm2-135m" in message


# -- local folders -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fixture", "arch", "kv_heads"),
    [("tiny_llama_dir", "LlamaForCausalLM", 2), ("tiny_gpt2_dir", "GPT2LMHeadModel", 4)],
)
def test_loads_a_local_folder(request, fixture, arch, kv_heads):
    folder = request.getfixturevalue(fixture)
    lm = load_model(str(folder), device="cpu")
    assert isinstance(lm, LoadedModel)
    assert lm.device == torch.device("cpu") and lm.dtype == torch.float32
    assert not lm.model.training
    assert not any(p.requires_grad for p in lm.model.parameters())
    assert lm.num_layers == 2 == len(lm.layers) and lm.num_heads == 4
    assert lm.tokenizer.pad_token is not None  # the fixture's tokenizer has none: the loader supplies EOS
    assert lm.n_params == sum(p.numel() for p in lm.model.parameters())
    assert lm.model.config._attn_implementation == "eager"
    info = model_info(lm)
    assert info["architecture"] == arch and info["kv_heads"] == kv_heads and info["layers"] == 2
    assert info["hidden_size"] == 64 and info["tied_embeddings"] is True and info["dtype"] == "float32"
    assert info["vocab_size"] == len(lm.tokenizer) and info["memory_mb"] > 0


def test_dtype_can_be_given_as_a_string(tiny_llama_dir):
    lm = load_model(str(tiny_llama_dir), device="cpu", dtype="bfloat16")
    assert lm.dtype == torch.bfloat16 and next(lm.model.parameters()).dtype == torch.bfloat16


def test_fingerprint_is_stable_and_changes_when_weights_are_rewritten(tiny_llama_dir, tmp_path):
    copy = shutil.copytree(tiny_llama_dir, tmp_path / "copy")
    first = load_model(str(copy)).fingerprint
    assert load_model(str(copy)).fingerprint == first
    weights = copy / "model.safetensors"
    st = weights.stat()
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert load_model(str(copy)).fingerprint != first


def test_missing_folder_file_and_folder_without_config_are_model_errors(tmp_path, tiny_llama_dir):
    with pytest.raises(ModelError, match="Unknown model"):
        load_model(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="config.json"):
        load_model(str(tmp_path / "empty"))
    with pytest.raises(ModelError, match="is a file"):
        load_model(str(tiny_llama_dir / "config.json"))


def test_incomplete_or_non_causal_folders_are_model_errors(tmp_path, tiny_llama_dir):
    from transformers import BertConfig

    config_only = tmp_path / "config-only"
    config_only.mkdir()
    shutil.copy(tiny_llama_dir / "config.json", config_only)
    with pytest.raises(ModelError, match="Cannot load a causal language model"):
        load_model(str(config_only))
    bert = tmp_path / "bert"
    BertConfig(
        hidden_size=64, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64
    ).save_pretrained(bert)
    with pytest.raises(ModelError, match="Cannot load a causal language model"):
        load_model(str(bert))


def test_too_big_for_this_machine(monkeypatch, tiny_llama_dir):
    monkeypatch.setattr(models.devices, "_available_bytes", lambda device: 1000)
    with pytest.raises(ModelError, match="too big for this machine"):
        load_model(str(tiny_llama_dir))


def test_layers_of_an_unknown_architecture_is_a_model_error():
    lm = LoadedModel("x", torch.nn.Linear(2, 2), None, torch.device("cpu"), torch.float32, "x", 6, "f")
    with pytest.raises(ModelError, match="transformer blocks"):
        _ = lm.layers


# -- devices -------------------------------------------------------------------------------------------------


def test_resolve_device(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device() == (torch.device("cpu"), torch.float32)
    assert resolve_device("cpu") == (torch.device("cpu"), torch.float32)
    with pytest.raises(ModelError, match="no CUDA GPU"):
        resolve_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert resolve_device() == (torch.device("cuda"), torch.bfloat16)
    assert resolve_device("cpu") == (torch.device("cpu"), torch.float32)  # explicit wins over a visible GPU
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert resolve_device("cuda:1") == (torch.device("cuda:1"), torch.float16)


# -- preparation ---------------------------------------------------------------------------------------------


def test_prepare_is_idempotent_and_atomic(cache, monkeypatch, tiny_llama_dir):
    calls = []

    def fake_convert(gguf, out):
        calls.append(gguf)
        shutil.copytree(tiny_llama_dir, out)

    monkeypatch.setattr(models.embedded, "_gguf_path", lambda spec, workdir: workdir / spec.gguf_file)
    monkeypatch.setattr(models.embedded, "_convert_gguf", fake_convert)
    assert not is_prepared("smollm2-135m")
    folder = prepare_embedded("smollm2-135m")
    assert folder == cache / "models" / "smollm2-135m" and is_prepared("smollm2-135m")
    assert prepare_embedded("smollm2-135m") == folder and len(calls) == 1
    assert [p.name for p in folder.parent.iterdir()] == ["smollm2-135m"]  # no staging left behind
    assert load_model("smollm2-135m").source.startswith("embedded:smollm2-135m")


def test_failed_prepare_leaves_nothing_behind(cache, monkeypatch):
    def broken_convert(gguf, out):
        out.mkdir()
        (out / "model.safetensors").write_bytes(b"half")
        raise RuntimeError("killed")

    monkeypatch.setattr(models.embedded, "_gguf_path", lambda spec, workdir: workdir / spec.gguf_file)
    monkeypatch.setattr(models.embedded, "_convert_gguf", broken_convert)
    with pytest.raises(RuntimeError):
        prepare_embedded("gemma3-270m")
    assert not is_prepared("gemma3-270m")
    assert list((cache / "models").iterdir()) == []


def test_stale_staging_of_a_dead_process_is_removed(cache):
    models_dir = cache / "models"
    dead = models_dir / ".smollm2-135m.999999999-abc.tmp"
    alive = models_dir / f".smollm2-135m.{os.getpid()}-abc.tmp"
    for d in (dead, alive):
        d.mkdir(parents=True)
    models.embedded._remove_stale_staging(models_dir, "smollm2-135m")
    assert not dead.exists() and alive.exists()


def _fake_chunked_model(tmp_path, monkeypatch, parts: list[bytes], checksum: str) -> EmbeddedModel:
    """Chunk packages laid out like gemma3-270m's, in tmp folders."""
    spec = EmbeddedModel("fake", "", "", "", "", "fake.gguf", ("main", "p1", "p2"))
    (tmp_path / "main" / "data").mkdir(parents=True)
    (tmp_path / "main" / "data" / "SHA256SUMS").write_text(f"{checksum}  fake.gguf\n")
    for i, data in enumerate(parts):
        (tmp_path / f"p{i + 1}" / "data").mkdir(parents=True)
        (tmp_path / f"p{i + 1}" / "data" / f"fake.gguf.part{i:02d}").write_bytes(data)
    monkeypatch.setattr(models.embedded, "_package_dir", lambda package: tmp_path / package)
    return spec


def test_chunked_gguf_is_joined_in_order_and_verified(tmp_path, monkeypatch):
    parts = [b"first-", b"second"]
    spec = _fake_chunked_model(tmp_path, monkeypatch, parts, hashlib.sha256(b"".join(parts)).hexdigest())
    work = tmp_path / "work"
    work.mkdir()
    assert models.embedded._gemma_gguf(spec, work).read_bytes() == b"first-second"


def test_chunked_gguf_checksum_mismatch_fails_clearly(tmp_path, monkeypatch):
    spec = _fake_chunked_model(tmp_path, monkeypatch, [b"a", b"b"], "0" * 64)
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(ModelError, match="sha256"):
        models.embedded._gemma_gguf(spec, work)


def test_missing_package_says_how_to_install():
    with pytest.raises(ModelError, match="make setup"):
        models.embedded._package_dir("no_such_package_hemlab")


# -- the real default model ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_smollm2_completes_the_capital_of_france():
    lm = load_model("smollm2-135m", device="cpu")
    ids = lm.tokenizer("The capital of France is", return_tensors="pt").input_ids
    out = lm.model.generate(ids, max_new_tokens=3, do_sample=False)
    assert lm.tokenizer.decode(out[0, ids.shape[1] :]).startswith(" Paris")
    info = model_info(lm)
    assert info["n_params"] == 134_515_008 and info["layers"] == 30 and info["kv_heads"] == 3
