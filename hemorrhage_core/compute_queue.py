"""One queue for the computations of a process: a lock that knows how many are ahead of a waiter.

The app shares one `ComputeQueue` between its runners and sessions so that two sessions never hold two modified
copies of a model at once; a session that has to wait is told how many computations are ahead of it, and can
cancel while it waits (the wait polls, so a cancel is seen within a quarter of a second).
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from .progress import CancelCheck, check

POLL_S = 0.25


class ComputeQueue:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._guard = threading.Lock()  # protects the tickets
        self._tickets = itertools.count()
        self._active: set[int] = set()  # tickets of computations running or waiting
        self._held = threading.local()  # per thread: the turns entered with `with queue:`

    def ahead(self, ticket: int) -> int:
        """Computations that entered before `ticket` and have not finished (the lock is not FIFO, so this is
        the honest count of what is in front, not a promise of order)."""
        with self._guard:
            return sum(t < ticket for t in self._active)

    @contextmanager
    def turn(
        self, *, waiting: Callable[[int], None] | None = None, cancelled: CancelCheck | None = None
    ) -> Iterator[None]:
        """Hold the queue for the body. While another computation holds it, `waiting(ahead)` is called about
        every POLL_S seconds and `cancelled` is checked (Cancelled: the body never runs)."""
        with self._guard:
            ticket = next(self._tickets)
            self._active.add(ticket)
        try:
            while not self._lock.acquire(timeout=POLL_S):
                check(cancelled, "waiting in the queue")
                if waiting is not None:
                    waiting(max(self.ahead(ticket), 1))
            try:
                yield
            finally:
                self._lock.release()
        finally:
            with self._guard:
                self._active.discard(ticket)

    # A plain lock's interface, for code that only needs mutual exclusion (`with queue:`).
    def __enter__(self) -> ComputeQueue:
        turn = self.turn()
        turn.__enter__()
        self._held.__dict__.setdefault("turns", []).append(turn)
        return self

    def __exit__(self, *exc) -> None:
        self._held.turns.pop().__exit__(*exc)

    def locked(self) -> bool:
        return self._lock.locked()
