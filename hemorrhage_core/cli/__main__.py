"""`python -m hemorrhage_core.cli`."""

from . import entry

entry()
