"""GGUF: llama.cpp's quantization types through real GGUF files, measured against the original model."""

from dashboard.family import family_page
from dashboard.llama_tools import tools_notice
from dashboard.navigation import through_app

through_app()

family_page("gguf", notice=tools_notice)
