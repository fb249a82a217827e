"""Every spec of the project: `specs/base.py` (the registry, RunSpec, ProbeSettings, the options and their one
check), `specs/families.py` (the family registry) and one module per modification family, each named like its
handler in `hemorrhage_core/modify/`. No torch here.

Importing this package imports every module in it, which registers each `@modification` kind and each family
entry (`register_family`), so a new family's spec module needs no line here (see docs/extending.md). Import
order is registration order: the order families are listed in the Modify section and kinds are offered within a
family (the dashboard's pickers, the first kind being a page's default). The modules below come first in this
order; any other module follows in name order.
"""

import importlib
import pkgutil

_FIRST = (
    "quantize",
    "gguf",
    "prune",
    "decode",
    "depth",
    "decoding_calibration",
    "distill",
    "checkpoint",
    "structured",
    "gptq",
    "bnb",
    "actquant",
    "scaling",
)
_OTHERS = sorted(
    m.name for m in pkgutil.iter_modules(__path__) if m.name not in {*_FIRST, "base", "families"}
)
for _name in (*_FIRST, *_OTHERS):
    importlib.import_module(f"{__name__}.{_name}")

from .actquant import ActQuant  # noqa: E402
from .base import (  # noqa: E402
    ATTN_CELLS_MAX,
    CODE_VERSION,
    DEFAULT_CALIBRATION,
    MODIFICATIONS,
    SCOPE_DEFAULTS,
    Calibrated,
    ModelFacts,
    Modification,
    Option,
    ProbeSettings,
    RunSpec,
    calibration_label,
    check,
    check_chain,
    check_fields,
    check_group_size,
    mod_from_dict,
    modification,
    option,
    options,
    parse_mod,
    parse_value,
    scope_label,
)
from .bnb import Bnb4bit, BnbInt8  # noqa: E402
from .checkpoint import Against  # noqa: E402
from .decode import MinP, RepetitionPenalty, Sampler, Temperature, TopK, TopP  # noqa: E402
from .decoding_calibration import CalibrateDecoding  # noqa: E402
from .depth import DepthUpscale, DuplicateLayers, InsertIdentity, RemoveLayers  # noqa: E402
from .distill import KLDistill  # noqa: E402
from .gguf import GGUF_TYPES, GGUFQuant  # noqa: E402
from .gptq import GPTQ  # noqa: E402
from .prune import CALIBRATED_PRUNE_METHODS, PRUNE_METHODS, Prune, parse_nm  # noqa: E402
from .quantize import QuantizeRTN  # noqa: E402
from .scaling import AWQ, SmoothQuant  # noqa: E402
from .structured import STRUCTURED_IMPORTANCE, PruneBlocks, PruneChannels, PruneHeads  # noqa: E402

__all__ = [
    "ATTN_CELLS_MAX", "AWQ", "CALIBRATED_PRUNE_METHODS", "CODE_VERSION", "DEFAULT_CALIBRATION", "GGUF_TYPES",
    "GGUFQuant", "GPTQ",
    "MODIFICATIONS", "PRUNE_METHODS", "SCOPE_DEFAULTS", "STRUCTURED_IMPORTANCE", "ActQuant", "Against",
    "Bnb4bit", "BnbInt8", "CalibrateDecoding", "Calibrated", "DepthUpscale", "DuplicateLayers", "InsertIdentity",
    "KLDistill", "MinP", "ModelFacts", "Modification", "Option", "ProbeSettings", "Prune", "PruneBlocks",
    "PruneChannels", "PruneHeads", "QuantizeRTN", "RemoveLayers", "RepetitionPenalty", "RunSpec", "Sampler",
    "SmoothQuant", "Temperature", "TopK", "TopP", "calibration_label", "check", "check_chain", "check_fields",
    "check_group_size", "mod_from_dict", "modification", "option", "options", "parse_mod", "parse_nm",
    "parse_value", "scope_label",
]  # fmt: skip
