"""The modification families: what the dashboard, the charts and the CLI need to know about each. No torch.

One `Family` entry per family name a spec class declares (`Modification.family`). Navigation builds the Modify
section from it, family pages take their title and introduction from it, charts their colour, the sweeps page its
list of families, and stacked chains their order (`stack_order`: weights first, decoding last). A new family is
its spec module, its handler module and its page; this registry gives the page its title and place.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Family:
    name: str  # what `Modification.family` says
    title: str  # page title and label
    icon: str  # Material icon of its page
    colour: str  # its colour in every chart
    stack_order: int  # position when the family pages' settings are stacked into one chain
    calibrates: bool  # whether its methods may read calibration text (then the page measures on click)
    intro: str  # the page's first paragraph
    page: str | None = None  # its dashboard page, when it has one


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family(
            "quant",
            "Quantize",
            "grid_on",
            "#F58518",
            1,
            True,
            "Store the weights on a coarser grid. Fewer bits save memory; watch where the perplexity ratio and "
            "the KL start to climb. The embedded baselines already sit on a 4-bit GGUF grid (see the Model page).",
            "pages/quantize.py",
        ),
        Family(
            "gguf",
            "GGUF",
            "inventory_2",
            "#EECA3B",
            1,
            True,
            "llama.cpp's quantization types (Q2_K … Q8_0, IQ types), through real GGUF files: the model is "
            "exported, quantized by llama-quantize (optionally with an importance matrix), read back and "
            "measured. Bits per weight are what the file stores: llama.cpp keeps some tensors wider and falls "
            "back to another type for rows that do not fill its 256-value K-quant blocks.",
            "pages/gguf.py",
        ),
        Family(
            "prune",
            "Prune",
            "content_cut",
            "#54A24B",
            0,
            True,
            "Zero a share of the weights. The headline shows the share of weights kept (1 − achieved sparsity); "
            "the paper finds unstructured pruning holds far longer than structured pruning, and magnitude "
            "collapses first.",
            "pages/prune.py",
        ),
        Family(
            "decode",
            "Decode",
            "casino",
            "#B279A2",
            4,
            False,
            "Change how the next token is chosen, not the weights. Every setting is compared with the original "
            "model at its reference setting (temperature 1, no truncation). Truncation gives zero probability to "
            "tokens the original can emit, so KL(original ‖ modified) is infinite by definition.",
            "pages/decode.py",
        ),
        Family(
            "depth",
            "Depth",
            "layers",
            "#9D755D",
            2,
            True,
            "Change the stack of blocks. Each original layer is compared with the layer it maps to in the changed "
            "model; an identity block (zero output projections) must leave everything unchanged.",
            "pages/depth.py",
        ),
        Family(
            "mitigation",
            "Mitigate",
            "healing",
            "#72B7B2",
            3,
            True,
            "Pick a damaged chain and the remedies that apply; the recovered share of the damage is the headline.",
            "pages/mitigate.py",
        ),
        Family(
            "checkpoint",
            "Checkpoint",
            "compare_arrows",
            "#E377C2",
            -1,
            False,
            "Another checkpoint of the model (a community quantization, a pruned or fine-tuned copy) measured "
            "against the original; on the Model page.",
        ),
    )
}


def family(name: str) -> Family:
    """The family of that name; an unknown one gets a neutral entry rather than an error (a plugin's kind)."""
    return FAMILIES.get(name) or Family(name, name.title(), "extension", "#7F7F7F", 99, True, "")


def stack_order() -> tuple[str, ...]:
    """Family names in the order their pages' settings are applied when stacked (weights first, decoding last)."""
    return tuple(f.name for f in sorted(FAMILIES.values(), key=lambda f: f.stack_order) if f.stack_order >= 0)


def with_pages() -> list[Family]:
    """The families that have a page, in the order the Modify section lists them (the registry's order)."""
    return [f for f in FAMILIES.values() if f.page]
