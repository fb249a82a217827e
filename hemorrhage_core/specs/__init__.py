"""Spec dataclasses of every modification family beyond the foundation's (one module per family).

Importing this package imports every module in it, so each family registers its `@modification` kinds without
anyone editing a shared list. Modules here must not import torch.
"""

import importlib
import pkgutil

for _info in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_info.name}")
