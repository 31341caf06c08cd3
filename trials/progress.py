"""Progress of long steps (scanning a folder, decoding images, evaluating), reported to whoever shows it.

Library code says what it is doing: ``with task("decoding images", n) as advance: … advance(k)``. Nothing
is shown unless a front end installed a reporter for the current context (``with reporting(bars): …``;
the ``nas`` command installs rich progress bars on a terminal), so library calls from notebooks and
tests stay silent and :mod:`trials` never imports a display library. ``advance`` must be called from
the thread that opened the task.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from contextvars import ContextVar

#: ``advance(n)``: ``n`` more items done.
Advance = Callable[[int], None]
#: ``reporter(description, total)``: a context manager yielding the task's ``advance``.
Reporter = Callable[[str, int], AbstractContextManager[Advance]]

_reporter: ContextVar[Reporter | None] = ContextVar("trials_progress_reporter", default=None)


@contextlib.contextmanager
def reporting(reporter: Reporter) -> Iterator[None]:
    """Show every :func:`task` opened inside this block through ``reporter``."""
    token = _reporter.set(reporter)
    try:
        yield
    finally:
        _reporter.reset(token)


@contextlib.contextmanager
def task(description: str, total: int) -> Iterator[Advance]:
    """A step of ``total`` items; yields ``advance(n)``, a no-op when no reporter is installed."""
    reporter = _reporter.get()
    if reporter is None or total <= 0:
        yield lambda _n: None
        return
    with reporter(description, total) as advance:
        yield advance
