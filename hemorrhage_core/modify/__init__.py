"""Modifications: one module per family. Importing this package imports every module in it, which registers
each family's handlers (`@handles`) without a shared list to edit."""

import importlib
import pkgutil

from .. import specs  # noqa: F401  (registers every spec kind the handlers refer to)
from .base import HANDLERS, ModContext, ModifiedModel, apply_modifications, handles

for _info in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_info.name}")

__all__ = ["HANDLERS", "ModContext", "ModifiedModel", "apply_modifications", "handles"]
