"""Decode: decoding changes (temperature, truncation, penalties), judged against the original at T = 1."""

from dashboard.family import family_page
from dashboard.navigation import through_app

through_app()

family_page("decode")
