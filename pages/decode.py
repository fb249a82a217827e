"""Decode: decoding changes (temperature, truncation, penalties), judged against the original at T = 1."""

from hemorrhage_core.ui.family import family_page
from hemorrhage_core.ui.navigation import through_app

through_app()

family_page("decode")
