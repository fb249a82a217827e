"""The `ray` executor: the points of a sweep spread over a Ray cluster, stored by this process alone.

One actor (worker.SweepWorker) per device slot: a GPU when the cluster has GPUs and the run is not pinned to
the CPU, otherwise a CPU slot. Each actor loads the base model and builds its reference once and measures the
specs sent to it, one at a time. This process (the driver) skips the points already stored before it contacts
the cluster, hands one point to each idle actor, and writes each measurement to the DuckDB file the moment it
arrives: it is the only writer, so DuckDB's one-writer-per-file rule never meets the workers.

A worker that dies mid-point (killed, out of memory, its node lost) has sent nothing back, so nothing of that
point was stored; the point goes back to the front of the queue for another actor, and a fresh actor takes the
dead one's slot. A point whose workers die `max_attempts` times is reported, not retried forever. An error the
measurement itself raises (a setting the model refuses) ends the sweep as it does in the serial executor; the
points stored before it stay stored.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import HemlabError
from . import PointEvent, PointListener, executor

log = logging.getLogger(__name__)

# Environment settings the workers need to find the same models, corpora and caches as the driver.
FORWARDED_ENV_PREFIX = "HEMLAB_"
WAIT_S = 0.5  # how often the driver looks up from waiting (a cancel is seen within this)


def _import_ray():
    try:
        import ray
    except ImportError as exc:  # a set-up without requirements.txt
        raise HemlabError(
            "--executor ray needs the ray package: run `make setup` (requirements.txt installs it)"
        ) from exc
    return ray


@dataclass
class _Slot:
    """One actor and the point it is measuring (None while idle)."""

    actor: Any  # a Ray ActorHandle: `measure.remote` is resolved at runtime
    point: int | None = None
    ref: object = None  # the ObjectRef of its measurement


@executor("ray")
class RayExecutor:
    def __init__(
        self,
        *,
        address: str | None = None,
        workers: int | None = None,
        worker_threads: int | None = None,
        max_attempts: int = 3,
        stay_connected: bool = False,
    ):
        """`address`: the cluster (`ray.init`'s: None or "auto" finds the one started on this machine by
        `ray start --head`, else starts a local one; "HOST:PORT"; "ray://HOST:10001"); a cluster this process
        already joined (`ray.init` called before) is used as it is. `workers`: at most this many actors
        (default: one per device slot). `worker_threads`: torch threads of each CPU actor (default: this
        process's own, so that CPU numbers are bit-identical to a serial run here). `stay_connected`: keep this
        process in the cluster after the sweep (the app: its sessions may share the connection)."""
        if workers is not None and workers < 1:
            raise HemlabError(f"--workers must be at least 1, got {workers}")
        if worker_threads is not None and worker_threads < 1:
            raise HemlabError(f"--worker-threads must be at least 1, got {worker_threads}")
        self.address = address
        self.workers = workers
        self.worker_threads = worker_threads
        self.max_attempts = max_attempts
        self.stay_connected = stay_connected
        self.actors_started = 0  # over this executor's life: what a test of "nothing to compute" checks
        self.retried = 0

    def run(
        self,
        runner,
        specs: Sequence,
        *,
        progress: Callable[[float, str], None] | None = None,
        on_point: PointListener | None = None,
        cancelled: Callable[[], bool] | None = None,
    ) -> list:
        total = len(specs)
        results: list = [None] * total
        done = 0

        def tell(event: PointEvent) -> None:
            log.debug("%s", event.describe())
            if on_point is not None:
                on_point(event)
            if progress is not None:
                progress(done / total if total else 1.0, event.describe())

        keys = []
        for i, spec in enumerate(specs):
            key, _ = runner.cache_key(spec)
            keys.append(key)
            if (stored := runner.lookup(spec)) is not None:
                results[i] = stored
                done += 1
                tell(PointEvent("cached", i, total, spec.label()))
        todo = deque(i for i in range(total) if results[i] is None)
        if not todo:
            return results  # everything stored: no cluster contacted, no actor started

        ray = _import_ray()
        joined_here = self._connect(ray)
        slots: list[_Slot] = []
        try:
            use_gpu, n_slots = self._slots(ray, runner)
            n = min(len(todo), self.workers or n_slots)
            make = self._actor_factory(ray, runner, use_gpu)
            slots = [_Slot(make()) for _ in range(n)]
            self.actors_started += n
            log.info("ray: %d worker(s), one per %s", n, "GPU" if use_gpu else "CPU slot")
            attempts = [0] * total

            def dispatch() -> None:  # one point to each idle actor
                for slot in slots:
                    if slot.point is None and todo:
                        slot.point = todo.popleft()
                        slot.ref = slot.actor.measure.remote(specs[slot.point])
                        tell(PointEvent("started", slot.point, total, specs[slot.point].label()))

            while todo or any(s.point is not None for s in slots):
                dispatch()
                busy = {s.ref: (s, s.point) for s in slots if s.point is not None}
                ready, _ = ray.wait(list(busy), num_returns=1, timeout=WAIT_S)
                if cancelled is not None and cancelled():
                    from ..errors import Cancelled

                    raise Cancelled("sweep cancelled")
                arrived = []
                for ref in ready:
                    slot, i = busy[ref]
                    slot.point = None
                    try:
                        measurement, worker, seconds = ray.get(ref)
                    except ray.exceptions.RayActorError as exc:
                        attempts[i] += 1
                        if attempts[i] >= self.max_attempts:
                            raise HemlabError(
                                f"the workers measuring {specs[i].label()} died {attempts[i]} times (last: "
                                f"{_first_line(exc)}); is it too big for one worker's memory? Nothing of this "
                                "point was stored"
                            ) from exc
                        todo.appendleft(i)
                        self.retried += 1
                        ray.kill(slot.actor, no_restart=True)
                        slot.actor = make()
                        self.actors_started += 1
                        tell(PointEvent("retried", i, total, specs[i].label()))
                        continue
                    except ray.exceptions.RayTaskError as exc:
                        # The measurement's own error (a HemlabError says what to change), as in a serial sweep.
                        if isinstance(exc.cause, BaseException):
                            raise exc.cause from None
                        raise HemlabError(_first_line(exc)) from exc
                    if measurement.run_key != keys[i]:
                        raise HemlabError(
                            f"worker {worker} measured {specs[i].label()} under another cache key than this "
                            "process: its model files, corpus or code differ from the driver's. Install the "
                            "same project and data on every node; nothing of this point was stored"
                        )
                    arrived.append((i, measurement, worker, seconds))
                # The freed workers get their next point before the store write (0.1-1 s per point), so they
                # never wait for the database.
                dispatch()
                for i, measurement, worker, seconds in arrived:
                    results[i] = runner.save(measurement)
                    done += 1
                    tell(PointEvent("stored", i, total, specs[i].label(), worker=worker, seconds=seconds))
            return results
        finally:
            for slot in slots:
                ray.kill(slot.actor, no_restart=True)
            if joined_here and not self.stay_connected:
                ray.shutdown()

    def _connect(self, ray) -> bool:
        """Join the cluster; True when this call joined it (and so leaves it at the end)."""
        if ray.is_initialized():
            return False
        try:
            ray.init(address=self.address, logging_level=logging.WARNING, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = self.address or "auto (this machine, or a new local cluster)"
            hint = (
                ""
                if self.address in (None, "auto") or os.environ.get("RAY_AUTH_MODE")
                else ". A cluster started by `ray start` checks a token: export RAY_AUTH_MODE=token and give this "
                "machine the cluster's token (~/.ray/auth_token or RAY_AUTH_TOKEN); Ray sends it to an explicit "
                "address only then"
            )
            raise HemlabError(f"cannot join the Ray cluster at {where}: {_first_line(exc)}{hint}") from exc
        return True

    def _slots(self, ray, runner) -> tuple[bool, int]:
        """(on GPUs?, how many device slots the cluster has)."""
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        pinned_to_cpu = (runner.device or "").startswith("cpu")
        if gpus and not pinned_to_cpu:
            return True, gpus
        cpus = int(resources.get("CPU", 0))
        if cpus < 1:
            raise HemlabError("the Ray cluster has no CPU or GPU to run a worker on")
        return False, cpus

    def _actor_factory(self, ray, runner, use_gpu: bool):
        import torch

        from .worker import SweepWorker

        if use_gpu and runner.dtype is None and not torch.cuda.is_available():
            raise HemlabError(
                "the cluster's workers run on GPUs, whose precision this process (no GPU) cannot tell, and runs "
                "are keyed by precision: pass --dtype bfloat16 (or float16, or float32)"
            )
        options = {
            # A GPU worker sees only the GPU Ray gave it, so it takes the default device ("cuda"), never an index.
            "device": None if use_gpu else runner.device,
            "dtype": runner.dtype,
            "device_map": runner.device_map,
            "trust_remote_code": runner.trust_remote_code,
            "allow_pickle": runner.allow_pickle,
            "allowed_dirs": runner.allowed_dirs,
        }
        if use_gpu:
            threads, resources = None, {"num_gpus": 1, "num_cpus": 1}
        else:
            threads = self.worker_threads or torch.get_num_threads()
            resources = {"num_cpus": 1}
        env = {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_ENV_PREFIX)}
        remote = ray.remote(SweepWorker).options(max_restarts=0, **resources)
        return lambda: remote.remote(options, threads, env)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
