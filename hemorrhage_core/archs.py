"""The architecture matrix: tiny random models of many transformers architectures, and which modifications work.

Users bring any transformers causal LM, so the library is tried on one tiny random model per architecture:

* `ARCHS`, a declarative table of `TinyArch` entries (model type, config kwargs for a model of width 64 with 3
  blocks, 4 attention heads and 2 KV heads where supported, 4 experts top-2 for MoE), each built offline by
  `build_tiny` with seeded random weights and the byte-level BPE tokenizer `build_tokenizer` below;
* `check`, which runs each step of `STEPS` (no change, RTN 4-bit, Wanda 50 %, GPTQ 4-bit, removing or duplicating
  a block, pruning the fewest heads allowed) through the public `Runner` on a few hundred words and says for each
  whether it worked (`ok`), was refused with the project's own clear error (`refused`), crashed (`failed`), or ran
  but gave wrong numbers (`wrong`);
* `archs_matrix.json` next to this module: the documented status of every (architecture, step), written by
  `hemlab archs --check --write` and compared with a live run by tests/test_archs.py.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import math
import os
import random
import re
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------------------------
# The tokenizer of every tiny model (also the test fixtures').
# --------------------------------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------------------------
# The registry.
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TinyArch:
    """One architecture: `config` is the transformers model type (`AutoConfig.for_model(config, **kwargs)`),
    `kwargs` the config of a tiny model (vocabulary size and BOS/EOS ids are added from the tokenizer),
    `layout` a short description of its attention / MLP / mixer layout."""

    name: str
    config: str
    layout: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    @property
    def config_class(self) -> str:
        from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

        return CONFIG_MAPPING_NAMES.get(self.config, self.config)


# Shared sizes (data, merged into each entry's kwargs): width 64, 3 blocks, 4 heads of 16, 2 KV heads.
_DEC = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=3,
    num_attention_heads=4,
    max_position_embeddings=512,
)
_GQA = {**_DEC, "num_key_value_heads": 2}
_GQA_HD = {**_GQA, "head_dim": 16}  # configs whose head_dim defaults to a fixed width (Gemma: 256)
_MHA = {**_DEC, "num_key_value_heads": 4}
_MOE = dict(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=64)
_MOE_LOCAL = dict(num_local_experts=4, num_experts_per_tok=2)
_ROUTED = dict(n_routed_experts=4, num_experts_per_tok=2, moe_intermediate_size=64, n_group=1, topk_group=1)
# DeepSeek-style multi-head latent attention, scaled down (K/V are expanded per query head: no KV groups).
_MLA = dict(
    num_key_value_heads=4,
    kv_lora_rank=32,
    q_lora_rank=48,
    qk_rope_head_dim=8,
    qk_nope_head_dim=8,
    v_head_dim=16,
)
_DEEPSEEK = {**_MLA, "n_shared_experts": 1, "first_k_dense_replace": 1}
# Attention sizes only, for configs whose MLP widths all have other names.
_ATT = dict(
    hidden_size=64,
    num_hidden_layers=3,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    max_position_embeddings=512,
)
_GPT2 = dict(n_embd=64, n_layer=3, n_head=4, n_inner=128, n_positions=512)
_SSM = dict(hidden_size=64, num_hidden_layers=3, state_size=8, expand=2)

# fmt: off
_TABLE: tuple[TinyArch, ...] = (
    # -- Llama-like: separate q/k/v/o projections, gated MLP --------------------------------------------------
    TinyArch("llama", "llama", "GQA", _GQA),
    TinyArch("mistral", "mistral", "GQA", _GQA),
    TinyArch("ministral", "ministral", "GQA, sliding window", _GQA_HD),
    TinyArch("qwen2", "qwen2", "GQA, qkv bias", _GQA),
    TinyArch("qwen3", "qwen3", "GQA, q/k norm", _GQA_HD),
    TinyArch("gemma", "gemma", "GQA", _GQA_HD),
    TinyArch("gemma2", "gemma2", "GQA, soft-capping, sandwich norms", _GQA_HD),
    TinyArch("gemma3_text", "gemma3_text", "GQA, sliding + global, q/k norm", _GQA_HD),
    TinyArch("vaultgemma", "vaultgemma", "GQA", _GQA_HD),
    TinyArch("cohere", "cohere", "GQA, parallel block, logit scale", _GQA),
    TinyArch("cohere2", "cohere2", "GQA, sliding + global, parallel block", _GQA),
    TinyArch("granite", "granite", "GQA, residual/logit multipliers", _GQA),
    TinyArch("phi3", "phi3", "GQA, fused qkv_proj + gate_up_proj", _GQA),
    TinyArch("stablelm", "stablelm", "GQA, partial rotary", _GQA),
    TinyArch("olmo", "olmo", "GQA, non-parametric norm", _GQA),
    TinyArch("olmo2", "olmo2", "GQA, q/k norm, post-norm", _GQA),
    TinyArch("olmo3", "olmo3", "GQA, sliding + global", _GQA),
    TinyArch("starcoder2", "starcoder2", "GQA, bias, plain MLP", _GQA),
    TinyArch("nemotron", "nemotron", "GQA, plain MLP, relu2", _GQA_HD),
    TinyArch("exaone4", "exaone4", "GQA, q/k norm, post-norm", _GQA),
    TinyArch("glm", "glm", "GQA, fused gate_up_proj", _GQA_HD),
    TinyArch("glm4", "glm4", "GQA, fused gate_up_proj, sandwich norms", _GQA_HD),
    TinyArch("helium", "helium", "GQA", _GQA_HD),
    TinyArch("smollm3", "smollm3", "GQA, NoPE layers", _GQA),
    TinyArch("arcee", "arcee", "GQA, plain MLP, relu2", _GQA_HD),
    TinyArch("seed_oss", "seed_oss", "GQA", _GQA_HD),
    TinyArch("hunyuan_v1_dense", "hunyuan_v1_dense", "GQA, q/k norm", _GQA_HD),
    TinyArch("ernie4_5", "ernie4_5", "GQA", _GQA_HD),
    TinyArch("apertus", "apertus", "GQA, q/k norm, xIELU MLP", {**_GQA, "max_position_embeddings": 65536}),  # Llama 3 rope: 8 x 8192
    TinyArch("bitnet", "bitnet", "GQA, sub-norms", _GQA),
    TinyArch("diffllama", "diffllama", "GQA, differential attention", _GQA_HD),
    TinyArch("cwm", "cwm", "GQA, sliding + global", {**_GQA_HD, "max_position_embeddings": 131072}),  # 16 x 8192
    TinyArch("internlm3", "internlm3", "GQA (Llama class)", _GQA_HD),
    TinyArch("exaone", "exaone", "GQA (Llama class)", _GQA_HD),
    TinyArch("jais2", "jais2", "GQA, plain MLP, relu2", _GQA_HD),
    TinyArch("nanochat", "nanochat", "GQA, q/k norm, relu2 MLP", _GQA),
    TinyArch("hyperclovax", "hyperclovax", "GQA, peri-layer norms", _GQA_HD),
    TinyArch("ministral3", "ministral3", "GQA", _GQA_HD),
    TinyArch("granite_swa", "granite_swa", "GQA, sliding + global, multipliers", {**_GQA, "sliding_window": 32}),
    TinyArch("apertus1p5_text", "apertus1p5_text", "GQA, q/k norm, xIELU MLP", _GQA),
    TinyArch("lfm3", "lfm3", "hybrid: short convolutions + gated GQA", {**_GQA_HD, "sliding_window": 32}),
    TinyArch("gemma4_unified_text", "gemma4_unified_text", "GQA, sliding + global", {**_GQA_HD, "sliding_window": 32}),
    TinyArch("doge", "doge", "GQA, dynamic mask attention", _GQA),
    TinyArch("modernbert-decoder", "modernbert-decoder", "MHA, fused Wqkv, GLU", _DEC),
    # -- MHA with other module names ----------------------------------------------------------------------
    TinyArch("gpt2", "gpt2", "MHA, fused c_attn (Conv1D)", _GPT2),
    TinyArch("gpt_bigcode", "gpt_bigcode", "MQA, fused c_attn (Linear)", _GPT2),
    TinyArch("openai-gpt", "openai-gpt", "MHA, fused c_attn (Conv1D), post-norm", dict(n_embd=64, n_layer=3, n_head=4, n_positions=512)),
    TinyArch("gpt_neo", "gpt_neo", "MHA, local + global", dict(hidden_size=64, num_layers=3, num_heads=4, intermediate_size=128, max_position_embeddings=512, attention_types=[[["global", "local"], 1], [["global"], 1]], window_size=32)),
    TinyArch("gpt_neox", "gpt_neox", "MHA, fused query_key_value, parallel block", _DEC),
    TinyArch("gptj", "gptj", "MHA, parallel block, partial rotary", dict(n_embd=64, n_layer=3, n_head=4, n_inner=128, n_positions=512, rotary_dim=8)),
    TinyArch("codegen", "codegen", "MHA, fused qkv_proj, parallel block", dict(n_embd=64, n_layer=3, n_head=4, n_inner=128, n_positions=512, n_ctx=512, rotary_dim=8)),
    TinyArch("bloom", "bloom", "MHA, fused query_key_value, ALiBi", dict(hidden_size=64, n_layer=3, n_head=4)),
    TinyArch("falcon", "falcon", "GQA, fused query_key_value, parallel block", dict(hidden_size=64, num_hidden_layers=3, num_attention_heads=4, num_kv_heads=2, new_decoder_architecture=True, ffn_hidden_size=128, max_position_embeddings=512)),
    TinyArch("falcon_mqa", "falcon", "MQA, fused query_key_value, parallel block (Falcon-7B layout)", dict(hidden_size=64, num_hidden_layers=3, num_attention_heads=4, multi_query=True, ffn_hidden_size=128, max_position_embeddings=512)),
    TinyArch("opt", "opt", "MHA, learned positions, fc1/fc2", dict(hidden_size=64, num_hidden_layers=3, num_attention_heads=4, ffn_dim=128, max_position_embeddings=512)),
    TinyArch("mpt", "mpt", "MHA, fused Wqkv, ALiBi", dict(d_model=64, n_layers=3, n_heads=4, expansion_ratio=2, max_seq_len=512)),
    TinyArch("biogpt", "biogpt", "MHA, learned positions", _DEC),
    TinyArch("xglm", "xglm", "MHA, sinusoidal positions", dict(d_model=64, num_layers=3, attention_heads=4, ffn_dim=128, max_position_embeddings=512)),
    TinyArch("ctrl", "ctrl", "MHA, sinusoidal positions", dict(n_embd=64, n_layer=3, n_head=4, dff=128, n_positions=512)),
    TinyArch("phi", "phi", "MHA, parallel block, partial rotary", _MHA),
    TinyArch("persimmon", "persimmon", "MHA, fused query_key_value, q/k norm", _DEC),
    TinyArch("gpt_neox_japanese", "gpt_neox_japanese", "MHA, fused query_key_value", dict(hidden_size=64, num_hidden_layers=3, num_attention_heads=4, intermediate_multiple_size=2, max_position_embeddings=512)),
    TinyArch("cpmant", "cpmant", "MHA, relative position bias", dict(hidden_size=64, num_hidden_layers=3, num_attention_heads=4, dim_head=16, dim_ff=128, prompt_length=4, prompt_types=4, segment_types=4)),
    # -- Mixture of experts ----------------------------------------------------------------------------------
    TinyArch("mixtral", "mixtral", "GQA, MoE", {**_GQA, **_MOE_LOCAL}),
    TinyArch("qwen2_moe", "qwen2_moe", "GQA, MoE + shared expert", {**_GQA, **_MOE, "shared_expert_intermediate_size": 64}),
    TinyArch("qwen3_moe", "qwen3_moe", "GQA, MoE", {**_GQA, **_MOE}),
    TinyArch("olmoe", "olmoe", "GQA, q/k norm, MoE", {**_GQA, "num_experts": 4, "num_experts_per_tok": 2}),
    TinyArch("flex_olmo", "flex_olmo", "GQA, q/k norm, MoE", {**_GQA, "num_experts": 4, "num_experts_per_tok": 2}),
    TinyArch("phimoe", "phimoe", "GQA, MoE", {**_GQA, **_MOE_LOCAL}),
    TinyArch("granitemoe", "granitemoe", "GQA, MoE", {**_GQA, **_MOE_LOCAL}),
    TinyArch("granitemoeshared", "granitemoeshared", "GQA, MoE + shared expert", {**_GQA, **_MOE_LOCAL, "shared_intermediate_size": 64}),
    TinyArch("gpt_oss", "gpt_oss", "GQA, MoE, sinks, sliding + global", {**_GQA_HD, **_MOE_LOCAL, "max_position_embeddings": 131072}),  # YaRN: 32 x 4096
    TinyArch("llama4_text", "llama4_text", "GQA, MoE + shared expert, chunked attention", {**_GQA_HD, **_MOE_LOCAL, "intermediate_size_mlp": 128}),
    TinyArch("dbrx", "dbrx", "GQA, fused Wqkv, MoE", dict(d_model=64, n_heads=4, n_layers=3, max_seq_len=512, attn_config={"kv_n_heads": 2, "rope_theta": 10000.0, "clip_qkv": 8.0}, ffn_config={"ffn_hidden_size": 128, "moe_num_experts": 4, "moe_top_k": 2})),
    TinyArch("deepseek_v3", "deepseek_v3", "MLA, MoE + shared expert", {**_GQA, **_ROUTED, **_DEEPSEEK}),
    TinyArch("deepseek_v2", "deepseek_v2", "MLA, MoE + shared expert", {**_GQA, **_ROUTED, **_DEEPSEEK}),
    TinyArch("minicpm3", "minicpm3", "MLA", {**_DEC, **_MLA}),
    TinyArch("ernie4_5_moe", "ernie4_5_moe", "GQA, MoE", {**_GQA, "moe_num_experts": 4, "moe_k": 2, "moe_intermediate_size": 64}),
    TinyArch("glm4_moe", "glm4_moe", "GQA, MoE + shared expert", {**_GQA, **_ROUTED, "first_k_dense_replace": 1}),
    TinyArch("hunyuan_v1_moe", "hunyuan_v1_moe", "GQA, MoE + shared expert", {**_GQA_HD, "num_experts": 4, "moe_topk": 2}),
    TinyArch("exaone_moe", "exaone_moe", "GQA, q/k norm, MoE + shared expert", {**_GQA, **_MOE, "n_group": 1, "topk_group": 1, "first_k_dense_replace": 1}),
    TinyArch("minimax", "minimax", "GQA + lightning attention, MoE", {**_GQA_HD, **_MOE_LOCAL}),
    TinyArch("jetmoe", "jetmoe", "MoA + MoE", dict(hidden_size=64, num_hidden_layers=3, num_key_value_heads=2, kv_channels=16, intermediate_size=128, max_position_embeddings=512, **_MOE_LOCAL)),
    TinyArch("aria_text", "aria_text", "GQA, MoE + shared expert", {**_GQA_HD, "moe_num_experts": 4, "moe_topk": 2}),
    TinyArch("cohere2_moe", "cohere2_moe", "GQA, MoE", {**_GQA_HD, "num_experts": 4, "num_experts_per_tok": 2}),
    TinyArch("minimax_m2", "minimax_m2", "GQA, MoE", {**_GQA_HD, **_MOE_LOCAL}),
    TinyArch("dots1", "dots1", "GQA, MoE + shared expert", {**_GQA, **_ROUTED, "n_shared_experts": 1, "first_k_dense_replace": 1}),
    TinyArch("solar_open", "solar_open", "GQA, MoE + shared expert", {**_ATT, **_ROUTED, "n_shared_experts": 1}),
    TinyArch("sarvam_moe", "sarvam_moe", "GQA, q/k norm, MoE + shared expert", {**_GQA_HD, **_ROUTED, "n_shared_experts": 1, "first_k_dense_replace": 1}),
    TinyArch("mimo_v2_flash", "mimo_v2_flash", "GQA, sliding + global (own KV heads), MoE", {**_GQA_HD, **_ROUTED, "v_head_dim": 16}),
    TinyArch("afmoe", "afmoe", "GQA, gated attention, sliding + global, MoE + shared expert", {**_GQA_HD, **_MOE, "num_shared_experts": 1, "num_dense_layers": 1, "global_attn_every_n_layers": 2, "sliding_window": 32}),
    TinyArch("beam", "beam", "GQA, gated attention, sliding + global, MoE", {**_GQA_HD, **_MOE, "n_group": 1, "topk_group": 1, "sliding_window": 32, "mlp_layer_types": ["dense", "sparse", "sparse"]}),
    TinyArch("flint", "flint", "GQA, q/k norm, dense + MoE blocks", {**_GQA_HD, **_MOE, "shared_expert_intermediate_size": 64, "sliding_window": 32}),
    TinyArch("kolibri1", "kolibri1", "GQA, q/k norm, MoE + shared expert", {**_ATT, **_MOE, "shared_expert_intermediate_size": 64, "sliding_window": 32}),
    TinyArch("laguna", "laguna", "GQA, head-gated attention, MoE + shared expert", {**_GQA_HD, **_MOE, "shared_expert_intermediate_size": 64, "sliding_window": 32}),
    TinyArch("mellum", "mellum", "GQA, q/k norm, MoE", {**_GQA_HD, **_MOE, "sliding_window": 32}),
    TinyArch("hy_v3", "hy_v3", "GQA, MoE + shared expert", {**_GQA_HD, **_MOE, "num_shared_experts": 1}),
    TinyArch("granitemoe_swa", "granitemoe_swa", "GQA, sliding + global, MoE", {**_GQA, **_MOE_LOCAL, "sliding_window": 32}),
    TinyArch("axk1", "axk1", "MLA, MoE + shared expert", {**_GQA, **_ROUTED, **_MLA, "n_shared_experts": 1, "mlp_layer_types": ["dense", "sparse", "sparse"]}),
    TinyArch("youtu", "youtu", "MLA", {**_GQA, **_MLA}),
    # -- State space, recurrent and hybrid ------------------------------------------------------------------
    TinyArch("mamba", "mamba", "SSM", _SSM),
    TinyArch("falcon_mamba", "falcon_mamba", "SSM", _SSM),
    TinyArch("mamba2", "mamba2", "SSM", dict(hidden_size=64, num_hidden_layers=3, num_heads=8, head_dim=16, state_size=8, n_groups=1, expand=2, chunk_size=64)),
    TinyArch("rwkv", "rwkv", "RWKV (linear attention)", dict(hidden_size=64, num_hidden_layers=3, intermediate_size=128, attention_hidden_size=64, context_length=512)),
    TinyArch("recurrent_gemma", "recurrent_gemma", "hybrid: RG-LRU + local MQA", dict(hidden_size=64, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=1, intermediate_size=128, lru_width=64, attention_window_size=64)),
    TinyArch("falcon_h1", "falcon_h1", "hybrid: parallel Mamba2 + GQA", {**_GQA, "mamba_d_ssm": 64, "mamba_n_heads": 4, "mamba_d_head": 16, "mamba_d_state": 8, "mamba_chunk_size": 64}),
    TinyArch("jamba", "jamba", "hybrid: Mamba + GQA, MoE", {**_GQA, "num_experts": 4, "num_experts_per_tok": 2, "attn_layer_period": 2, "attn_layer_offset": 1, "expert_layer_period": 2, "expert_layer_offset": 1, "mamba_d_state": 8, "use_mamba_kernels": False}),
    TinyArch("bamba", "bamba", "hybrid: Mamba2 + GQA", {**_GQA, "attn_layer_indices": [1], "mamba_n_heads": 8, "mamba_d_head": 16, "mamba_d_state": 8, "mamba_chunk_size": 64}),
    TinyArch("granitemoehybrid", "granitemoehybrid", "hybrid: Mamba2 + GQA, MoE", {**_GQA, **_MOE_LOCAL, "shared_intermediate_size": 64, "layer_types": ["mamba", "attention", "mamba"], "mamba_n_heads": 8, "mamba_d_head": 16, "mamba_d_state": 8, "mamba_chunk_size": 64}),
    TinyArch("nemotron_h", "nemotron_h", "hybrid: Mamba2 + GQA + MLP blocks", dict(hidden_size=64, num_attention_heads=4, num_key_value_heads=2, head_dim=16, intermediate_size=128, max_position_embeddings=512, layers_block_type=["mamba", "attention", "mlp"], mamba_num_heads=8, mamba_head_dim=16, ssm_state_size=8, n_groups=1, chunk_size=64)),
    TinyArch("zamba2", "zamba2", "hybrid: Mamba2 + shared attention", dict(hidden_size=64, num_hidden_layers=3, num_attention_heads=4, intermediate_size=128, max_position_embeddings=512, layers_block_type=["mamba", "hybrid", "mamba"], mamba_d_state=8, n_mamba_heads=4, chunk_size=64, use_mem_eff_path=False, adapter_rank=8)),
    TinyArch("lfm2", "lfm2", "hybrid: short convolutions + GQA", {**_GQA, "layer_types": ["conv", "full_attention", "conv"], "block_multiple_of": 16}),
    TinyArch("qwen3_next", "qwen3_next", "hybrid: gated DeltaNet + GQA, MoE", {**_GQA_HD, **_MOE, "shared_expert_intermediate_size": 64, "layer_types": ["linear_attention", "full_attention", "linear_attention"], "linear_key_head_dim": 16, "linear_value_head_dim": 16, "linear_num_key_heads": 2, "linear_num_value_heads": 4}),
    TinyArch("qwen3_5_text", "qwen3_5_text", "hybrid: gated DeltaNet + GQA", {**_GQA_HD, "layer_types": ["linear_attention", "full_attention", "linear_attention"], "linear_key_head_dim": 16, "linear_value_head_dim": 16, "linear_num_key_heads": 2, "linear_num_value_heads": 4}),
    TinyArch("qwen3_5_moe_text", "qwen3_5_moe_text", "hybrid: gated DeltaNet + GQA, MoE", {**_ATT, **_MOE, "shared_expert_intermediate_size": 64, "layer_types": ["linear_attention", "full_attention", "linear_attention"], "linear_key_head_dim": 16, "linear_value_head_dim": 16, "linear_num_key_heads": 2, "linear_num_value_heads": 4}),
    TinyArch("kimi_linear", "kimi_linear", "hybrid: KDA linear attention + MLA, MoE", {**_GQA, **_MLA, "n_shared_experts": 1, "num_local_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 64, "q_lora_rank": None, "layer_types": ["linear_attention", "full_attention", "linear_attention"], "linear_head_dim": 16, "linear_num_heads": 4}),
    TinyArch("lfm2_moe", "lfm2_moe", "hybrid: short convolutions + GQA, MoE", {**_GQA, **_MOE, "num_dense_layers": 1, "layer_types": ["conv", "full_attention", "conv"]}),
    TinyArch("olmo_hybrid", "olmo_hybrid", "hybrid: gated DeltaNet + GQA", {**_GQA, "layer_types": ["linear_attention", "full_attention", "linear_attention"]}),
)
# fmt: on

ARCHS: dict[str, TinyArch] = {a.name: a for a in _TABLE}
assert len(ARCHS) == len(_TABLE), "two registry entries share a name"

# The architectures tried in the default test run (the rest run with `make test-archs`).
REPRESENTATIVE: tuple[str, ...] = (
    "llama",
    "gpt2",
    "opt",
    "falcon",
    "gpt_neox",
    "phi3",
    "gemma2",
    "cohere",
    "mixtral",
    "qwen3_moe",
    "olmo2",
    "mamba",
)

# --------------------------------------------------------------------------------------------------------------
# Building a tiny model.
# --------------------------------------------------------------------------------------------------------------


def tiny_config(name: str, tokenizer=None):
    """The transformers config of `ARCHS[name]`, vocabulary and BOS/EOS ids taken from the tokenizer."""
    from transformers import AutoConfig
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    arch = ARCHS[name]
    tokenizer = tokenizer or build_tokenizer()
    params = inspect.signature(CONFIG_MAPPING[arch.config].__init__).parameters
    vocab = len(tokenizer)
    kwargs: dict[str, Any] = {"vocab_size": vocab}
    for key, value in (("bos_token_id", tokenizer.bos_token_id), ("eos_token_id", tokenizer.eos_token_id)):
        if key in params:
            kwargs[key] = value
    for key, param in params.items():  # default pad / cls / sep ids past the tiny vocabulary
        default = param.default
        if key.endswith("_token_id") and key not in kwargs and isinstance(default, int) and default >= vocab:
            kwargs[key] = tokenizer.eos_token_id
    kwargs.update(arch.kwargs)
    return AutoConfig.for_model(arch.config, **kwargs)


def build_tiny(name: str, folder: str | Path, tokenizer=None, *, seed: int = 0) -> Path:
    """Save a tiny random `ARCHS[name]` model (seeded, float32, safetensors) and its tokenizer in `folder`;
    `hemorrhage_core.models.load_model(folder)` loads it. Returns the folder."""
    import torch
    from transformers import AutoModelForCausalLM

    tokenizer = tokenizer or build_tokenizer()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = tiny_config(name, tokenizer)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with quiet_progress():
        model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    log.debug(
        "built tiny %s (%s, %d parameters) in %s", name, type(model).__name__, model.num_parameters(), folder
    )
    return folder


# --------------------------------------------------------------------------------------------------------------
# The matrix.
# --------------------------------------------------------------------------------------------------------------

OK, REFUSED, FAILED, WRONG = "ok", "refused", "failed", "wrong"
STATUSES = (OK, REFUSED, FAILED, WRONG)

# Measurement and calibration sizes: a few hundred words, 4 windows of 64 tokens, 4 x 64 calibration tokens.
CORPUS_WORDS = 400
PROBE = dict(tokens=256, window=64, batch_size=4, attn_probes=2, attn_len=16, top_k=64)
CALIB = dict(calib_samples=4, calib_len=64)


def _step_mods(step: str, corpus: str) -> tuple:
    """The modification chain of a step (calibrated steps calibrate on the end of the check's corpus)."""
    from .specs import GPTQ, DuplicateLayers, Prune, PruneHeads, QuantizeRTN, RemoveLayers

    calib: dict[str, Any] = dict(calib_corpus=corpus, **CALIB)
    return {
        "identity": (),
        "rtn4": (QuantizeRTN(bits=4),),
        "wanda50": (Prune(sparsity=0.5, method="wanda", **calib),),
        "gptq4": (GPTQ(bits=4, group_size=-1, **calib),),
        "remove_block": (RemoveLayers(layers=(1,)),),
        "duplicate_block": (DuplicateLayers(start=1, end=2),),
        # 0.25 is the fewest heads prune_heads removes: 1 of 4 MHA heads, 1 query head per KV group of 2 or 4.
        "prune_heads": (PruneHeads(fraction=0.25),),
    }[step]


STEPS: tuple[str, ...] = (
    "identity",
    "rtn4",
    "wanda50",
    "gptq4",
    "remove_block",
    "duplicate_block",
    "prune_heads",
)
STEP_DOCS = {
    "identity": "no modification: KL exactly 0, perplexity ratio 1, top-1 agreement 1",
    "rtn4": "RTN 4-bit per channel: KL > 0, every linear weight quantized",
    "wanda50": "Wanda 50 % unstructured (4 x 64 calibration tokens)",
    "gptq4": "GPTQ 4-bit per channel (4 x 64 calibration tokens)",
    "remove_block": "remove block 1 of 3",
    "duplicate_block": "duplicate block 1",
    "prune_heads": "prune the fewest heads allowed (fraction 0.25, magnitude)",
}


@dataclass
class StepResult:
    """What one step did on one architecture. `message`: the error (refused / failed) or what was wrong."""

    status: str
    message: str = ""
    seconds: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)

    def documented(self) -> dict[str, str]:
        """The part recorded in archs_matrix.json (no timing or numbers: they vary between machines)."""
        return {"status": self.status, "message": self.message}


_KEPT_METRICS = ("kl_mean", "kl_max", "ppl_ratio", "top1_agreement", "coverage")
_MESSAGE_MAX = 400


def _clean(message: str, workdir: Path) -> str:
    """One stable line: the check's temporary paths and object addresses replaced, whitespace collapsed."""
    for path in {str(workdir), str(workdir.resolve())}:
        message = message.replace(path, "<workdir>")
    message = re.sub(r" at 0x[0-9a-f]+", "", message)
    message = " ".join(message.split())
    return message if len(message) <= _MESSAGE_MAX else message[: _MESSAGE_MAX - 3] + "..."


def _judge(step: str, metrics: Mapping[str, float]) -> str:
    """'' when the numbers of a step that ran are right, else what is wrong with them."""
    problems = []
    kl_mean = metrics.get("kl_mean")
    if kl_mean is None or not math.isfinite(kl_mean) or kl_mean < 0:
        problems.append(f"kl_mean = {kl_mean}")
    if step == "identity":
        for key, want in (("kl_max", 0.0), ("ppl_ratio", 1.0), ("top1_agreement", 1.0)):
            if metrics.get(key) != want:
                problems.append(f"{key} = {metrics.get(key)!r}, expected exactly {want}")
    else:
        if kl_mean is not None and kl_mean == 0:
            problems.append("kl_mean = 0: the modification changed nothing")
        if step == "rtn4" and "coverage" in metrics and metrics["coverage"] != 1.0:
            problems.append(f"coverage = {metrics['coverage']!r}, expected 1.0")
    return "; ".join(problems)


def write_corpus(path: str | Path, n_words: int = CORPUS_WORDS, seed: int = 0) -> Path:
    """A text file of `n_words` words drawn (seeded) from the tokenizer's own paragraph."""
    words = TOKENIZER_TEXT.split()
    rng = random.Random(seed)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [" ".join(rng.choice(words) for _ in range(16)) for _ in range(math.ceil(n_words / 16))]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@contextlib.contextmanager
def quiet_progress() -> Iterator[None]:
    """No transformers progress bars ("Loading weights", "Writing model shards") for the duration: a matrix
    loads and saves hundreds of tiny models."""
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


@contextlib.contextmanager
def _environment(**values: str) -> Iterator[None]:
    """Set environment variables for the duration (the reference cache location is read from HEMLAB_CACHE)."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def check(
    name: str,
    steps: Sequence[str] = STEPS,
    workdir: str | Path | None = None,
    *,
    device: str = "cpu",
    tokenizer=None,
) -> dict[str, StepResult]:
    """Run each step on a freshly built tiny `name` through the public Runner; step -> StepResult.

    Everything (model folder, corpus, reference cache) is written under `workdir`/`name` (`workdir`: a temporary
    folder when None, removed afterwards); results go to an in-memory database. A step that raises the project's
    HemlabError is `refused`, any other exception `failed`, numbers that break the step's invariants `wrong`.
    Messages name `workdir` as '<workdir>', so they read the same on every machine.
    """
    if workdir is None:
        with tempfile.TemporaryDirectory(prefix=f"hemlab-arch-{name}-") as tmp:
            return check(name, steps, tmp, device=device, tokenizer=tokenizer)
    from .errors import HemlabError
    from .runner import Runner
    from .specs import ProbeSettings, RunSpec
    from .store import Store

    unknown = [s for s in steps if s not in STEPS]
    if unknown:
        raise ValueError(f"unknown step(s) {', '.join(unknown)}; steps are {', '.join(STEPS)}")
    root = Path(workdir)
    here = root / name
    here.mkdir(parents=True, exist_ok=True)
    corpus = str(write_corpus(here / "corpus.txt"))
    results: dict[str, StepResult] = {}
    t0 = time.perf_counter()
    try:
        folder = build_tiny(name, here / "model", tokenizer)
    except Exception as exc:  # the registry entry itself is broken: every step says so
        message = _clean(f"build_tiny: {type(exc).__name__}: {exc}", root)
        log.warning("%s: %s", name, message)
        return {s: StepResult(FAILED, message, time.perf_counter() - t0) for s in steps}
    build_s = time.perf_counter() - t0
    with _environment(HEMLAB_CACHE=str(here / "cache")), quiet_progress():
        runner = Runner(Store(":memory:"), device=device)
        probe = ProbeSettings(corpus=corpus, **PROBE)
        for step in steps:
            t = time.perf_counter()
            try:
                result = runner.run(RunSpec(model=str(folder), mods=_step_mods(step, corpus), probe=probe))
            except HemlabError as exc:
                results[step] = StepResult(REFUSED, _clean(str(exc), root))
            except Exception as exc:  # noqa: BLE001 - any other exception is what this matrix looks for
                log.debug("%s / %s failed", name, step, exc_info=True)
                results[step] = StepResult(FAILED, _clean(f"{type(exc).__name__}: {exc}", root))
            else:
                metrics = {k: float(result.metrics[k]) for k in _KEPT_METRICS if k in result.metrics}
                problem = _judge(step, result.metrics)
                results[step] = StepResult(WRONG if problem else OK, problem, metrics=metrics)
            results[step].seconds = time.perf_counter() - t
            r = results[step]
            log.info("%-18s %-16s %-8s %5.1f s %s", name, step, r.status, r.seconds, r.message[:160])
    if steps:
        results[steps[0]].seconds += build_s  # building the model counts toward the first step
    return results


def check_many(
    names: Sequence[str],
    steps: Sequence[str] = STEPS,
    workdir: str | Path | None = None,
    *,
    device: str = "cpu",
    progress: Callable[[str, dict[str, StepResult]], None] | None = None,
) -> dict[str, dict[str, StepResult]]:
    """`check` over several architectures (one tokenizer for all); name -> step -> StepResult."""
    tokenizer = build_tokenizer()
    out = {}
    for name in names:
        out[name] = check(name, steps, workdir, device=device, tokenizer=tokenizer)
        if progress:
            progress(name, out[name])
    return out


# --------------------------------------------------------------------------------------------------------------
# The documented matrix (archs_matrix.json) and its tables.
# --------------------------------------------------------------------------------------------------------------

MATRIX_PATH = Path(__file__).with_name("archs_matrix.json")


def load_matrix(path: str | Path | None = None) -> dict[str, dict[str, dict[str, str]]]:
    """arch -> step -> {status, message}, as last written by `hemlab archs --check --write` ({} if none).
    `path` defaults to MATRIX_PATH."""
    path = Path(path or MATRIX_PATH)
    if not path.exists():
        return {}
    return json.loads(path.read_text(encoding="utf-8"))


def save_matrix(
    results: Mapping[str, Mapping[str, StepResult]], path: str | Path | None = None, *, merge: bool = True
) -> Path:
    """Write `results` as the documented matrix; `merge`: keep the entries of architectures not in `results`
    (dropping those no longer in the registry). Keys are in registry and step order, so diffs stay small.
    `path` defaults to MATRIX_PATH."""
    path = Path(path or MATRIX_PATH)
    old = load_matrix(path) if merge else {}
    combined = {**old, **results_as_matrix(results)}
    ordered = {
        name: {s: combined[name][s] for s in STEPS if s in combined[name]}
        for name in ARCHS
        if name in combined
    }
    path.write_text(json.dumps(ordered, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


Matrix = Mapping[str, Mapping[str, Mapping[str, str]]]


def table_rows(matrix: Matrix | None = None, names: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """One row per registry entry (or per entry of `names`): name, model type, config class, layout, and per
    step its status in `matrix` (default: the documented one; '' when it has none)."""
    matrix = load_matrix() if matrix is None else matrix
    rows = []
    for arch in (ARCHS[n] for n in (names or ARCHS)):
        documented = matrix.get(arch.name, {})
        rows.append({
            "name": arch.name,
            "model_type": arch.config,
            "config_class": arch.config_class,
            "layout": arch.layout,
            "steps": {s: dict(documented[s]) if s in documented else {"status": "", "message": ""} for s in STEPS},
        })  # fmt: skip
    return rows


def markdown_table(matrix: Matrix | None = None, names: Sequence[str] | None = None) -> str:
    """The README table: one row per architecture, one column per step (✅ ok, ⛔ refused, ❌ failed,
    ⚠️ wrong), then the distinct messages with the architectures they concern."""
    marks = {OK: "✅", REFUSED: "⛔", FAILED: "❌", WRONG: "⚠️", "": "·"}
    matrix = load_matrix() if matrix is None else matrix
    rows = table_rows(matrix, names)
    lines = [
        "| architecture | config | layout | " + " | ".join(STEPS) + " |",
        "|---|---|---|" + "---|" * len(STEPS),
    ]
    for r in rows:
        cells = [marks.get(r["steps"][s]["status"], "?") for s in STEPS]
        lines.append(f"| {r['name']} | {r['config_class']} | {r['layout']} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("✅ ok · ⛔ refused with a clear error · ❌ failed · ⚠️ ran but gave wrong numbers")
    lines.append("")
    lines.append("Steps: " + "; ".join(f"`{s}` {STEP_DOCS[s]}" for s in STEPS) + ".")
    groups = message_groups(matrix)
    if groups:
        lines.append("")
        for (status, message), cases in groups.items():
            lines.append(f"- {marks[status]} `{message}`: {', '.join(cases)}")
    return "\n".join(lines) + "\n"


def text_table(matrix: Matrix | None = None, names: Sequence[str] | None = None) -> str:
    """A plain-text table for the terminal (name, config class, layout, one column per step), then the distinct
    messages of the steps that are not ok, each with the architectures and steps it concerns."""
    matrix = load_matrix() if matrix is None else matrix
    rows = table_rows(matrix, names)
    head = f"{'architecture':<20} {'config':<26} {'layout':<44} " + " ".join(f"{s:<15}" for s in STEPS)
    lines = [head, "-" * len(head)]
    for r in rows:
        layout = r["layout"] if len(r["layout"]) <= 44 else r["layout"][:41] + "..."
        cells = " ".join(f"{r['steps'][s]['status'] or '-':<15}" for s in STEPS)
        lines.append(f"{r['name']:<20} {r['config_class']:<26} {layout:<44} {cells}".rstrip())
    for (status, message), cases in message_groups(matrix).items():
        lines.append("")
        lines.append(f"{status} ({len(cases)}): {message}")
        lines.append("    " + ", ".join(cases))
    return "\n".join(lines) + "\n"


# What `cause` folds: the model's own class names ('FalconDecoderLayer', 'GPTJBlock', 'DbrxExpertGLU'), but not
# exception names or the few library names a message means literally.
_CLASS_NAME = re.compile(r"\b[A-Z][A-Za-z0-9_]*(?:[a-z0-9][A-Z]|[A-Z][a-z])[A-Za-z0-9_]*\b")
_LITERAL_NAMES = frozenset({"Conv1D", "NoneType", "MoE", "OLMo", "OLMoE", "ModuleList", "PyTorch", "DuckDB"})
_FOLDS = (
    (
        re.compile(r"^[^:]*? would modify only"),
        "<method> would modify only",
    ),  # coverage refusals of any method
    (re.compile(r"\b(?:\w+\.)+\d+\.(?:\w+\.)*(\w+)\b"), r"…\1"),  # model.layers.0.mlp.experts -> …experts
    (re.compile(r"\(\d+(?:, \d+)*\)"), "(…)"),  # tensor shapes
    (re.compile(r"\b\d+(?:\.\d+)?%"), "N%"),
    (re.compile(r"\b\d+ module\(s\)"), "N module(s)"),
    (re.compile(r"\(\+\d+ more\)"), "(+N more)"),
)
_CAUSE_MAX = 200


def cause(message: str) -> str:
    """What a message says with the particulars of one model folded away (its class names, module paths,
    shapes, shares), cut to 200 characters, so one cause groups many architectures."""

    def fold_class(m: re.Match) -> str:
        word = m.group(0)
        keep = word in _LITERAL_NAMES or word.endswith(("Error", "Exception", "Warning"))
        return word if keep else "<class>"

    text = _CLASS_NAME.sub(fold_class, message)
    for pattern, repl in _FOLDS:
        text = pattern.sub(repl, text)
    return text if len(text) <= _CAUSE_MAX else text[: _CAUSE_MAX - 3] + "..."


def message_groups(matrix: Matrix | None = None) -> dict[tuple[str, str], list[str]]:
    """(status, cause of the message) -> ['arch/step', ...] for every step that is not ok, most frequent first."""
    matrix = load_matrix() if matrix is None else matrix
    groups: dict[tuple[str, str], list[str]] = {}
    for name, steps in matrix.items():
        for step, entry in steps.items():
            if entry["status"] != OK:
                groups.setdefault((entry["status"], cause(entry["message"])), []).append(f"{name}/{step}")
    return dict(sorted(groups.items(), key=lambda kv: -len(kv[1])))


def results_as_matrix(
    results: Mapping[str, Mapping[str, StepResult]],
) -> dict[str, dict[str, dict[str, str]]]:
    """Live results in the documented matrix's shape (arch -> step -> {status, message})."""
    return {name: {s: r.documented() for s, r in steps.items()} for name, steps in results.items()}


def differences(results: Mapping[str, Mapping[str, StepResult]], matrix: Matrix | None = None) -> list[str]:
    """'arch/step: documented X, measured Y' for every live result that differs from the documented matrix
    (status, or message for refused steps)."""
    matrix = load_matrix() if matrix is None else matrix
    out = []
    for name, steps in results.items():
        for step, r in steps.items():
            doc = matrix.get(name, {}).get(step)
            if doc is None:
                out.append(f"{name}/{step}: not documented, measured {r.status}")
            elif doc["status"] != r.status or (r.status == REFUSED and doc["message"] != r.message):
                out.append(f"{name}/{step}: documented {doc['status']}, measured {r.status}: {r.message}")
    return out


__all__ = [
    "ARCHS",
    "EOS",
    "REPRESENTATIVE",
    "STEPS",
    "TOKENIZER_TEXT",
    "StepResult",
    "TinyArch",
    "build_tiny",
    "build_tokenizer",
    "check",
    "check_many",
]
