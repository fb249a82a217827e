"""Where things are inside a causal LM: found from the model's own metadata and one observed forward pass.

Every part of the project (measurement, calibration, GPTQ/SparseGPT, depth changes, structured pruning, the logit
lens, the dashboard's model info) asks this module, so there is one answer per model:

- **blocks**: the `nn.ModuleList` whose children are of a class named in `model._no_split_modules` (transformers'
  own statement of what a block is), preferring the one inside `get_decoder()` with `num_hidden_layers` entries;
  failing that, a `ModuleList` of `num_hidden_layers` modules of one class.
- **final path**: the modules between the last block and the output head (a final norm; OPT's `project_out`),
  found by running a few tokens with hooks and following the tensor from the last block's output to the head's
  input, so no table of names (`norm`, `ln_f`, `layer_norm`, `final_layernorm`, ...) is needed.
- **head**: `get_output_embeddings()`.
- **attention / MLP of a block** and the head counts, from class names and the config's standard attributes.

Block outputs may be a tensor, a tuple or a list (`block_hidden` reads any of them).

The layout is computed once per model and kept on the model object as plain names (`_hemlab_layout`), so deep
copies (every modification works on one) resolve the same modules without another probe pass.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .errors import ModelError

if TYPE_CHECKING:
    from transformers import PreTrainedModel

log = logging.getLogger(__name__)

_ATTR = "_hemlab_layout"
_ATTENTION_CLASS = re.compile(r"(Attention|Attn)", re.IGNORECASE)
_MLP_CLASS = re.compile(r"(MLP|MoE|Moe|FeedForward|FFN|SparseMoe|Experts?$)", re.IGNORECASE)
_MLP_NAMES = ("mlp", "feed_forward", "ffn", "block_sparse_moe", "moe", "ff")


@dataclass(frozen=True)
class Layout:
    """Qualified module names of a model's structure (strings only, so it survives deepcopy and pickling)."""

    blocks: str  # the block ModuleList, e.g. "model.layers"
    final_path: tuple[str, ...]  # modules from the last block's output to the head's input, in order
    head: str  # the output embedding, e.g. "lm_head"


def block_hidden(output: Any) -> torch.Tensor:
    """The hidden states of a block's output: the tensor itself, or the first item of a tuple or list."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    hidden = getattr(output, "hidden_states", None) if not isinstance(output, (tuple, list)) else None
    if isinstance(hidden, torch.Tensor):
        return hidden
    raise TypeError(f"cannot read hidden states from a block output of type {type(output).__name__}")


def like_block_output(template: Any, hidden: torch.Tensor) -> Any:
    """`hidden` in the form a block returns (`template`: one real output of that block)."""
    if isinstance(template, torch.Tensor):
        return hidden
    if isinstance(template, (tuple, list)):
        return type(template)((hidden, *template[1:]))
    raise TypeError(f"cannot mimic a block output of type {type(template).__name__}")


def text_config(model: PreTrainedModel) -> Any:
    return model.config.get_text_config()


def _num_layers(model: PreTrainedModel) -> int | None:
    config = getattr(model, "config", None)
    n = getattr(config.get_text_config(), "num_hidden_layers", None) if config is not None else None
    return int(n) if isinstance(n, int) else None


def _module_lists(model: PreTrainedModel) -> list[tuple[str, nn.ModuleList]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.ModuleList) and len(m) > 0]


def _find_blocks_name(model: PreTrainedModel) -> str:
    """The qualified name of the block list (see the module docstring for the rule)."""
    no_split = set(getattr(model, "_no_split_modules", None) or [])
    n_layers = _num_layers(model)
    get_decoder = getattr(model, "get_decoder", None)
    try:
        decoder = get_decoder() if get_decoder is not None else None
    except (AttributeError, NotImplementedError, ValueError):
        decoder = None
    decoder_ids = {id(m) for m in decoder.modules()} if decoder is not None else set()
    lists = _module_lists(model)

    def uniform(ml: nn.ModuleList) -> bool:
        return len({type(c) for c in ml}) == 1

    def score(item: tuple[str, nn.ModuleList]) -> tuple:
        name, ml = item
        return (
            all(type(c).__name__ in no_split for c in ml),  # transformers' own block class
            len(ml) == n_layers,
            id(ml) in decoder_ids,
            uniform(ml),
            len(ml),
        )

    candidates = [
        item
        for item in lists
        if all(type(c).__name__ in no_split for c in item[1])
        or (uniform(item[1]) and len(item[1]) == n_layers)
    ]
    if not candidates:
        raise ModelError(
            f"Cannot find the transformer blocks of {type(model).__name__}: no nn.ModuleList holds modules of "
            f"its block classes ({', '.join(sorted(no_split)) or 'none declared in _no_split_modules'}) or "
            f"{n_layers} modules of one class."
        )
    return max(candidates, key=score)[0]


def _block_list(model: PreTrainedModel, name: str) -> nn.ModuleList:
    """The ModuleList at `name` (a name `_find_blocks_name` chose among the model's ModuleLists)."""
    blocks = model.get_submodule(name)
    if not isinstance(blocks, nn.ModuleList):
        raise ModelError(f"{type(model).__name__}.{name} is a {type(blocks).__name__}, not the block list")
    return blocks


def _trace_final_path(model: PreTrainedModel, blocks_name: str, head: nn.Module) -> tuple[str, ...]:
    """Run a few tokens and follow the last block's output to the head's input through the modules between."""
    blocks = _block_list(model, blocks_name)
    inside = {id(m) for m in blocks.modules()}
    names = {id(m): n for n, m in model.named_modules()}
    events: list[
        tuple[str, Any, Any]
    ] = []  # (name, first input, output) in execution order, after the blocks
    state = {"after_blocks": False}
    handles = []

    def last_block_hook(_m, _args, output):
        state["after_blocks"] = True
        events.clear()
        events.append(("<blocks>", None, block_hidden(output)))

    def hook(module, args, output):
        if state["after_blocks"] and id(module) not in inside and module is not head:
            first = args[0] if args else None
            if isinstance(first, torch.Tensor) and isinstance(output, torch.Tensor):
                events.append((names[id(module)], first, output))

    head_input: list[torch.Tensor] = []

    def head_hook(_m, args):
        head_input.append(args[0])

    handles.append(blocks[-1].register_forward_hook(last_block_hook))
    for _name, module in model.named_modules():
        if id(module) not in inside and not list(module.children()):  # leaves outside the blocks
            handles.append(module.register_forward_hook(hook))
    handles.append(head.register_forward_pre_hook(head_hook))
    try:
        device = next(model.parameters()).device
        vocab = int(getattr(text_config(model), "vocab_size", 2) or 2)
        ids = (torch.arange(4, device=device) % max(vocab, 1))[None]
        with torch.inference_mode():
            model(input_ids=ids, use_cache=False)
    finally:
        for h in handles:
            h.remove()
    if not head_input or not events:
        raise ModelError(f"{type(model).__name__}: its forward does not pass its blocks and output head")
    target = head_input[-1]

    def same(a: torch.Tensor, b: torch.Tensor) -> bool:
        return a.data_ptr() == b.data_ptr() and a.shape == b.shape

    path: list[str] = []
    current = events[0][2]
    for name, first, output in events[1:]:
        if same(current, target):
            break
        if same(first, current):
            path.append(name)
            current = output
    if not same(current, target):
        # Something functional (a scaling written in forward) sits between: the self-check decides whether the
        # tool's own reading is usable; the traced modules are still the best description of the path.
        log.info(
            "%s: the head input is not the output of a module chain after the last block",
            type(model).__name__,
        )
    return tuple(path)


def layout(model: PreTrainedModel) -> Layout:
    """The model's `Layout`, computed on first use (one short forward pass) and cached on the model."""
    cached = model.__dict__.get(_ATTR)
    if cached is not None:
        return cached
    blocks = _find_blocks_name(model)
    head = model.get_output_embeddings()
    if head is None:
        raise ModelError(f"{type(model).__name__} has no output embedding (get_output_embeddings() is None)")
    head_name = next(n for n, m in model.named_modules() if m is head)
    result = Layout(blocks=blocks, final_path=_trace_final_path(model, blocks, head), head=head_name)
    model.__dict__[_ATTR] = result  # plain attribute: nn.Module.__setattr__ is not needed for a non-module
    log.debug("layout of %s: %s", type(model).__name__, result)
    return result


def decoder(model: PreTrainedModel) -> nn.Module:
    """The decoder stack the *ForCausalLM calls (embeddings, blocks, final norm; no head).

    `get_decoder()` where it gives one; some classes (Llama 4 text) return themselves there, and then it is the
    child module that holds the blocks.
    """
    found = model.get_decoder()
    blocks = find_blocks(model)
    # Valid only if it holds the blocks and no head (ModernBERT-decoder's `.decoder` is its LM head, a Linear).
    holds_blocks = isinstance(found, nn.Module) and any(m is blocks for m in found.modules())
    get_head = getattr(found, "get_output_embeddings", None)
    if found is not model and holds_blocks and (get_head is None or get_head() is None):
        return found
    for child in model.children():
        if any(m is blocks for m in child.modules()):
            return child
    raise ModelError(f"Cannot find the decoder of {type(model).__name__} (the module that holds its blocks)")


def find_blocks(model: PreTrainedModel) -> nn.ModuleList:
    """The transformer blocks in order (the live ModuleList: editing it edits the model)."""
    cached = model.__dict__.get(_ATTR)
    return _block_list(model, cached.blocks if cached is not None else _find_blocks_name(model))


def blocks_name(model: PreTrainedModel) -> str:
    """Qualified name of the block list (e.g. "model.layers"), to name a block's layers as the model does."""
    cached = model.__dict__.get(_ATTR)
    return cached.blocks if cached is not None else _find_blocks_name(model)


def final_modules(model: PreTrainedModel) -> list[nn.Module]:
    """The modules between the last block and the head (the final norm, usually one)."""
    return [model.get_submodule(n) for n in layout(model).final_path]


def apply_final(model: PreTrainedModel, hidden: torch.Tensor) -> torch.Tensor:
    """A residual-stream vector [..., d] read through the final path (the logit lens's first step)."""
    for module in final_modules(model):
        param = next(module.parameters(), None)
        hidden = module(hidden.to(param.dtype) if param is not None else hidden)
    return hidden


# ---------------------------------------------------------------------------------------------------------------
# Inside a block.
# ---------------------------------------------------------------------------------------------------------------


def _first_match(block: nn.Module, test) -> tuple[str, nn.Module] | None:
    for name, module in block.named_modules():
        if name and test(name, module):
            return name, module
    return None


def attention_of(block: nn.Module) -> tuple[str, nn.Module] | None:
    """(name, module) of the block's self-attention, or None for blocks without one (Mamba, recurrent layers)."""
    return _first_match(block, lambda _n, m: bool(_ATTENTION_CLASS.search(type(m).__name__)))


def mlp_of(block: nn.Module) -> tuple[str, nn.Module] | None:
    """(name, module) of the block's MLP (dense or mixture of experts), or None."""
    found = _first_match(block, lambda n, _m: n in _MLP_NAMES)
    return found or _first_match(block, lambda _n, m: bool(_MLP_CLASS.search(type(m).__name__)))


@dataclass(frozen=True)
class Heads:
    heads: int
    kv_heads: int
    head_dim: int


def head_counts(model: PreTrainedModel) -> Heads:
    """Query heads, key/value heads and head size from the config's standard attributes (attribute maps give
    `num_attention_heads` for GPT-2's `n_head` and friends; `multi_query` means one KV head)."""
    cfg = text_config(model)
    heads = int(getattr(cfg, "num_attention_heads", None) or getattr(cfg, "n_head", 0) or 0)
    kv = getattr(cfg, "num_key_value_heads", None) or getattr(cfg, "num_kv_heads", None)
    if kv is None and (getattr(cfg, "multi_query", False) or getattr(cfg, "multi_query_attention", False)):
        kv = 1
    hidden = int(getattr(cfg, "hidden_size", None) or getattr(cfg, "n_embd", 0) or 0)
    head_dim = getattr(cfg, "head_dim", None) or (hidden // heads if heads else 0)
    return Heads(heads=heads, kv_heads=int(kv or heads), head_dim=int(head_dim))
