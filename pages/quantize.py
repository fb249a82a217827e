"""Quantize: every weight-quantization method of the catalogue, measured against the original model."""

from hemorrhage_core.ui.family import family_page
from hemorrhage_core.ui.navigation import through_app

through_app()

family_page(
    "quant",
    "Store the weights on a coarser grid. Fewer bits save memory; watch where the perplexity ratio and the KL "
    "start to climb. The embedded baselines already sit on a 4-bit GGUF grid (see the Model page).",
)
