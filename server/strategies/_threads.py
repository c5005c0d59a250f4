"""One BLAS thread for the strategies' small dense math (a scoped, thread-safe, re-entrant limit).

The server's matrices are small (a few hundred rows): a multi-threaded BLAS gains little on them
and collapses, by orders of magnitude on small QRs, when other processes load the cores (as they
do on a shared machine, or beside the in-process engine's training threads). The limit changes
where the work runs, not what it computes (the FedHFT tests compare rounds bit for bit).

It limits the BLAS libraries loaded when it is first used (numpy's). ``threadpoolctl`` is optional
(scikit-learn brings it): without it the limit is a no-op.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Iterator

_lock = threading.Lock()
_depth = 0
_restore = None  # the active limiter of the outermost scope
_controller = None


def _limit_one():
    global _controller
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return None
    if _controller is None:
        _controller = ThreadpoolController()  # scans the loaded libraries once (~10 ms)
    return _controller.limit(limits=1, user_api="blas")


@contextlib.contextmanager
def one_blas_thread() -> Iterator[None]:
    """Run the block with BLAS limited to one thread; the outermost scope (over all threads of the
    process, since the BLAS setting is process-wide) restores the previous setting."""
    global _depth, _restore
    with _lock:
        if _depth == 0:
            _restore = _limit_one()
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _restore is not None:
                _restore.restore_original_limits()
                _restore = None


class OneBlasThreadPlanning:
    """A Strategy mixin (list it before the base): ``configure`` and ``preview`` run their server
    math (mixtures, SVDs) under ``one_blas_thread``."""

    def configure(self, round_idx, clients, rng=None):
        with one_blas_thread():
            return super().configure(round_idx, clients, rng)

    def preview(self, client):
        with one_blas_thread():
            return super().preview(client)
