"""Quantize: every weight-quantization method of the catalogue, measured against the original model."""

from dashboard.family import family_page
from dashboard.navigation import through_app

through_app()

family_page("quant")
