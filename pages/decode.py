"""Decode: decoding changes (temperature, truncation, penalties), judged against the original at T = 1."""

from hemorrhage_core.ui.family import family_page
from hemorrhage_core.ui.navigation import through_app

through_app()

family_page(
    "decode",
    "Change how the next token is chosen, not the weights. Every setting is compared with the original model "
    "at its reference setting (temperature 1, no truncation). Truncation gives zero probability to tokens the "
    "original can emit, so KL(original ‖ modified) is infinite by definition.",
)
