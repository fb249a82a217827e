"""Modifications: one module per family; importing this package registers every handler."""

from . import decode, prune, quantize  # noqa: F401  (registration side effects)
from .base import HANDLERS, ModContext, ModifiedModel, apply_modifications, handles

__all__ = ["HANDLERS", "ModContext", "ModifiedModel", "apply_modifications", "handles"]
