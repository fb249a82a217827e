"""Write a transformers causal LM (weights and tokenizer) as a GGUF file that llama.cpp and transformers can read.

The layout is what llama.cpp's `convert_hf_to_gguf.py` writes, because that is what GGUF readers expect:

- tensor names in llama.cpp's scheme (`token_embd`, `blk.N.attn_q`, `output_norm`, ...); `output.weight` only
  when the output head is not tied to the embedding (readers infer tied embeddings from its absence);
- the query and key projections permuted row-wise for llama.cpp's rope, which rotates adjacent pairs where
  transformers rotates the two halves of each head (readers undo the permutation);
- the architecture's hyper-parameters under `llama.*` keys, and the tokenizer in the metadata
  (`tokenizer.ggml.model = "gpt2"`: byte-level BPE with its tokens, token types, merges and special ids);
- matrices quantized with `gguf.quants.quantize` (Q8_0 by default; F16 and F32 store them as floats), norms and
  other 1-D tensors in F32, as llama.cpp keeps them.

Only the Llama family (`model_type == "llama"`) with a byte-level BPE tokenizer is supported; `ARCHITECTURES` is
the registry a new family is added to. Used by the tests to build GGUF checkpoints of the tiny models; a later
feature exports modified models with it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import ModelError

log = logging.getLogger(__name__)

# (gguf name, numpy float32 array) pairs for every tensor of a model, in file order.
TensorSource = Callable[[Any], Iterator[tuple[str, np.ndarray]]]
ARCHITECTURES: dict[str, tuple[TensorSource, Callable[[Any, Any], None]]] = {}


def architecture(model_type: str):
    """Register (tensors, metadata) writers of one transformers `model_type`."""

    def register(pair):
        ARCHITECTURES[model_type] = pair
        return pair

    return register


def rope_permute(weight: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's permutation of a q/k projection [n_head * head_dim, d]: within each head, rows (i, i + half)
    become adjacent (2i, 2i + 1), the pair layout its rope rotates. Its inverse is transformers'
    `_reverse_permute_weights`."""
    half = weight.shape[0] // n_head // 2
    return weight.reshape(n_head, 2, half, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().to(torch.float32).cpu().numpy()


def _llama_tensors(model) -> Iterator[tuple[str, np.ndarray]]:
    cfg = model.config
    heads, kv_heads = cfg.num_attention_heads, cfg.num_key_value_heads
    inner = model.model
    yield "token_embd.weight", _np(inner.embed_tokens.weight)
    for i, block in enumerate(inner.layers):
        attn, mlp = block.self_attn, block.mlp
        for part in (
            attn.q_proj,
            attn.k_proj,
            attn.v_proj,
            attn.o_proj,
            mlp.gate_proj,
            mlp.up_proj,
            mlp.down_proj,
        ):
            if getattr(part, "bias", None) is not None:
                raise ModelError("GGUF export: Llama projections with biases are not supported")
        yield f"blk.{i}.attn_norm.weight", _np(block.input_layernorm.weight)
        yield f"blk.{i}.attn_q.weight", rope_permute(_np(attn.q_proj.weight), heads)
        yield f"blk.{i}.attn_k.weight", rope_permute(_np(attn.k_proj.weight), kv_heads)
        yield f"blk.{i}.attn_v.weight", _np(attn.v_proj.weight)
        yield f"blk.{i}.attn_output.weight", _np(attn.o_proj.weight)
        yield f"blk.{i}.ffn_norm.weight", _np(block.post_attention_layernorm.weight)
        yield f"blk.{i}.ffn_gate.weight", _np(mlp.gate_proj.weight)
        yield f"blk.{i}.ffn_up.weight", _np(mlp.up_proj.weight)
        yield f"blk.{i}.ffn_down.weight", _np(mlp.down_proj.weight)
    yield "output_norm.weight", _np(inner.norm.weight)
    head = model.get_output_embeddings()
    if head.weight is not inner.embed_tokens.weight:  # tied: readers infer it from output.weight's absence
        yield "output.weight", _np(head.weight)


def _llama_metadata(writer, model) -> None:
    cfg = model.config
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    rope = getattr(cfg, "rope_parameters", None) or {}
    if rope.get("rope_type", "default") != "default":
        raise ModelError(f"GGUF export: rope scaling {rope.get('rope_type')!r} is not supported")
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(float(rope.get("rope_theta", getattr(cfg, "rope_theta", 10000.0))))
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    writer.add_vocab_size(model.get_output_embeddings().weight.shape[0])


architecture("llama")((_llama_tensors, _llama_metadata))


def _tokenizer_metadata(writer, tokenizer, vocab_size: int) -> None:
    """A byte-level BPE tokenizer as llama.cpp's "gpt2" tokenizer: tokens by id (padded to the head's rows),
    token types (special tokens CONTROL, other added tokens USER_DEFINED), merges, special ids."""
    from gguf import TokenType

    state = json.loads(tokenizer.backend_tokenizer.to_str())
    model = state["model"]
    if model.get("type") != "BPE" or "ByteLevel" not in json.dumps(state.get("pre_tokenizer")):
        raise ModelError("GGUF export needs a byte-level BPE tokenizer (GPT-2 / Llama 3 / SmolLM style)")
    by_id = {i: t for t, i in tokenizer.get_vocab().items()}
    if vocab_size < len(by_id):
        raise ModelError(
            f"GGUF export: the tokenizer has {len(by_id)} tokens but the output head {vocab_size}"
        )
    special = set(tokenizer.all_special_ids)
    added = {t.content for t in tokenizer.added_tokens_decoder.values()}
    tokens, types = [], []
    for i in range(vocab_size):
        token = by_id.get(i)
        if token is None:  # a head padded past the vocabulary, as llama.cpp writes it
            tokens.append(f"[PAD{i}]")
            types.append(TokenType.UNUSED)
            continue
        tokens.append(token)
        types.append(
            TokenType.CONTROL
            if i in special
            else TokenType.USER_DEFINED
            if token in added
            else TokenType.NORMAL
        )
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    for key, add in (("bos_token_id", writer.add_bos_token_id), ("eos_token_id", writer.add_eos_token_id)):
        if getattr(tokenizer, key, None) is not None:
            add(getattr(tokenizer, key))
    bos = getattr(tokenizer, "bos_token_id", None)
    writer.add_add_bos_token(bos is not None and tokenizer.encode("a")[:1] == [bos])
    if '"Split"' in json.dumps(state.get("pre_tokenizer")):
        # Readers split text with GPT-2's regex unless tokenizer.ggml.pre names another one they know.
        log.warning("GGUF export: the tokenizer splits text with its own regex; readers will use GPT-2's")


def _encode(name: str, array: np.ndarray, qtype) -> tuple[np.ndarray, Any]:
    """(data, its GGML type): 1-D tensors stay F32; matrices take `qtype` when their rows fit its blocks."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, quants

    if array.ndim < 2 or qtype == GGMLQuantizationType.F32:
        return array.astype(np.float32), GGMLQuantizationType.F32
    block = GGML_QUANT_SIZES[qtype][0]
    if array.shape[-1] % block:
        log.warning("%s: rows of %d values do not fill %s blocks of %d; stored as F16", name,
                    array.shape[-1], qtype.name, block)  # fmt: skip
        qtype = GGMLQuantizationType.F16
    return quants.quantize(array, qtype), qtype


def write_gguf(model, tokenizer, path: str | Path, qtype: str = "Q8_0", name: str | None = None) -> Path:
    """Write `model` (a transformers causal LM of a registered architecture) and its `tokenizer` to `path`.

    `qtype`: a GGML type name `gguf.quants.quantize` implements (Q8_0, Q4_0, F16, F32, ...). Returns the path.
    Raises ModelError for an architecture, tokenizer or type this writer does not support.
    """
    import gguf

    model_type = model.config.model_type
    if model_type not in ARCHITECTURES:
        raise ModelError(f"GGUF export supports {', '.join(sorted(ARCHITECTURES))}, not {model_type!r}")
    try:
        ggml_type = gguf.GGMLQuantizationType[qtype.upper()]
    except KeyError:
        raise ModelError(f"unknown GGML type {qtype!r}; e.g. Q8_0, Q4_0, F16, F32") from None
    tensors, metadata = ARCHITECTURES[model_type]
    path = Path(path)
    writer = gguf.GGUFWriter(path, model_type)
    writer.add_name(name or path.stem)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    metadata(writer, model)
    _tokenizer_metadata(writer, tokenizer, model.get_output_embeddings().weight.shape[0])
    for tensor_name, array in tensors(model):
        data, data_type = _encode(tensor_name, array, ggml_type)
        writer.add_tensor(tensor_name, data, raw_dtype=data_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    log.info("wrote %s (%s, %.1f MB)", path, ggml_type.name, path.stat().st_size / 2**20)
    return path
