"""Every spec of the project: `specs/base.py` (the registry, RunSpec, ProbeSettings, the shared checks) and one
module per modification family, each named like its handler in `hemorrhage_core/modify/`. No torch here.

The family modules are imported explicitly below, which registers every `@modification` kind; adding a family is
one line here (see docs/extending.md). The import order is the registration order, which is the order kinds are
offered in within a family (the dashboard's pickers, `hemlab mods`).
"""

# isort: off
from . import quantize, prune, decode, decoding_calibration, distill, checkpoint  # noqa: F401, I001
from . import depth, structured, gptq, bnb, actquant, scaling, gguf  # noqa: F401, I001

# isort: on
from .actquant import ActQuant
from .base import (
    ATTN_CELLS_MAX,
    CODE_VERSION,
    DEFAULT_CALIBRATION,
    MODIFICATIONS,
    SCOPE_DEFAULTS,
    Calibrated,
    ModelFacts,
    Modification,
    ProbeSettings,
    RunSpec,
    calibration_label,
    check,
    check_calibration,
    check_chain,
    check_group_size,
    mod_from_dict,
    modification,
    parse_mod,
    parse_value,
    scope_label,
)
from .bnb import Bnb4bit, BnbInt8
from .checkpoint import Against
from .decode import MinP, RepetitionPenalty, Sampler, Temperature, TopK, TopP
from .decoding_calibration import CalibrateDecoding
from .depth import DepthUpscale, DuplicateLayers, InsertIdentity, RemoveLayers
from .distill import KLDistill
from .gguf import GGUF_TYPES, GGUFQuant
from .gptq import GPTQ
from .prune import CALIBRATED_PRUNE_METHODS, PRUNE_METHODS, Prune, parse_nm
from .quantize import QuantizeRTN
from .scaling import AWQ, SmoothQuant
from .structured import STRUCTURED_IMPORTANCE, PruneBlocks, PruneChannels, PruneHeads

__all__ = [
    "ATTN_CELLS_MAX", "AWQ", "GGUF_TYPES", "GGUFQuant", "CALIBRATED_PRUNE_METHODS", "CODE_VERSION", "DEFAULT_CALIBRATION", "GPTQ",
    "MODIFICATIONS", "PRUNE_METHODS", "SCOPE_DEFAULTS", "STRUCTURED_IMPORTANCE", "ActQuant", "Against",
    "Bnb4bit", "BnbInt8", "CalibrateDecoding", "Calibrated", "DepthUpscale", "DuplicateLayers", "InsertIdentity",
    "KLDistill", "MinP", "ModelFacts", "Modification", "ProbeSettings", "Prune", "PruneBlocks", "PruneChannels",
    "PruneHeads", "QuantizeRTN", "RemoveLayers", "RepetitionPenalty", "RunSpec", "Sampler", "SmoothQuant",
    "Temperature", "TopK", "TopP", "calibration_label", "check", "check_calibration", "check_chain",
    "check_group_size", "mod_from_dict", "modification", "parse_mod", "parse_nm", "parse_value", "scope_label",
]  # fmt: skip
