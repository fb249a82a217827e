"""Depth: remove, duplicate or insert transformer blocks, compared layer by layer with the original."""

from hemorrhage_core.ui.family import family_page
from hemorrhage_core.ui.navigation import through_app

through_app()

family_page("depth")
