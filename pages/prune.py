"""Prune: every pruning method of the catalogue, measured against the original model."""

from hemorrhage_core.ui.family import family_page
from hemorrhage_core.ui.navigation import through_app

through_app()

family_page(
    "prune",
    "Zero a share of the weights. The headline shows the share of weights kept (1 − achieved sparsity); the paper "
    "finds unstructured pruning holds far longer than structured pruning, and magnitude collapses first.",
)
