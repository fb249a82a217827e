"""The process that measures points for a Ray sweep: one per device slot (a GPU, or a CPU slot).

A plain class (Ray wraps it with `ray.remote` in ray_cluster.py, so this module imports no Ray): its runner
loads each base model and builds each reference once, then measures every spec sent to it. It never opens the
results database (its store is in memory and never written): what it returns is the measurement, which the
driver alone stores.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from typing import Any

import torch

from ..runner import Measurement, Runner
from ..specs import RunSpec
from ..store import Store


class SweepWorker:
    def __init__(self, runner_options: dict[str, Any], threads: int | None, env: dict[str, str]):
        """`env`: the driver's HEMLAB_* settings (data and cache folders), set before anything reads them;
        `threads`: torch's intra-op threads (None: Ray's default for the slot). A CPU sum splits its work by
        thread, so the same thread count as the serial run is what makes the numbers bit-identical to it."""
        os.environ.update(env)
        if threads:
            torch.set_num_threads(threads)
        logging.basicConfig(level=logging.WARNING)
        self.runner = Runner(Store(":memory:"), **runner_options)
        self.name = f"{socket.gethostname()}:{os.getpid()}"

    def measure(self, spec: RunSpec) -> tuple[Measurement, str, float]:
        """(the measurement of `spec`, this worker's host:pid, its wall time in seconds)."""
        t0 = time.perf_counter()
        measurement = self.runner.measure(spec)
        return measurement, self.name, time.perf_counter() - t0

    def threads(self) -> int:
        return torch.get_num_threads()
