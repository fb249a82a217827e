"""Decode: decoding changes (temperature, truncation, penalties), judged against the original at T = 1."""

from dashboard.family import family_page
from dashboard.navigation import through_app

through_app()

# The specs' neutral defaults (T = 1, an all-off sampler) are the original model: a first look would show nothing
# changed, so the page starts at settings people use.
family_page("decode", starting={"temperature": {"value": 0.7}, "sampler": {"temperature": 0.7, "top_p": 0.9}})
