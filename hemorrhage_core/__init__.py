"""Hemorrhage Lab core: load a model, modify a copy, measure how much it bleeds against the original."""

__version__ = "0.1.0"
