"""One-time set-up of offline assets: convert embedded models to safetensors, extract built-in corpora.

Run by ``make setup`` as ``python -m hemorrhage_core.prepare`` (all embedded models and corpora). Every step is
idempotent and atomic, so a second run takes about a second and an interrupted run can simply be repeated.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Iterable
from pathlib import Path

from .corpora import prepare_corpora
from .models import EMBEDDED, prepare_embedded

log = logging.getLogger(__name__)


def prepare_all(models: Iterable[str] = ("smollm2-135m",), corpora: bool = True) -> dict[str, Path]:
    """Prepare the given embedded models and (optionally) every built-in corpus; return name → path."""
    prepared: dict[str, Path] = {}
    for name in models:
        t0 = time.perf_counter()
        prepared[name] = prepare_embedded(name)
        log.info("model %-14s ready (%.1f s): %s", name, time.perf_counter() - t0, prepared[name])
    if corpora:
        for name, path in prepare_corpora().items():
            log.info("corpus %-13s ready: %s", name, path)
            prepared[name] = path
    return prepared


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=list(EMBEDDED), help="embedded models (default: all)")
    parser.add_argument("--no-corpora", action="store_true", help="skip the built-in corpora")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="prepare: %(message)s")
    prepare_all(args.models, corpora=not args.no_corpora)


if __name__ == "__main__":
    main()
