"""Showing the library's long steps: :mod:`trials.progress` tasks (header scans, decoding, evaluation) reach
the front end that installed a reporter. ``nas.cli`` may not import :mod:`trials` (a layering contract),
so it installs its bars through this module: ``with show_library_progress(reporter): …``."""

from __future__ import annotations

from trials.progress import Reporter
from trials.progress import reporting as show_library_progress

__all__ = ["Reporter", "show_library_progress"]
