"""Depth: remove, duplicate or insert transformer blocks, compared layer by layer with the original."""

from dashboard.family import family_page
from dashboard.navigation import through_app

through_app()

family_page("depth")
