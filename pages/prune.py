"""Prune: every pruning method of the catalogue, measured against the original model."""

from hemorrhage_core.ui.family import family_page
from hemorrhage_core.ui.navigation import through_app

through_app()

family_page("prune")
