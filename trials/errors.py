"""Typed errors of the ``trials`` package (data, training, export, measurement).

Each is a :class:`search_space.errors.NasError`: raise with a message and a ``hint`` saying what to do.
"""

from __future__ import annotations

from search_space.errors import NasError

__all__ = ["DataError", "ExportError", "MeasureError", "TrainError"]


class DataError(NasError):
    """A data set is missing, unreadable or malformed (bad folder layout, empty class, bad split)."""


class TrainError(NasError):
    """Training cannot start or continue (bad config, diverged loss, checkpoint/spec mismatch)."""


class ExportError(NasError):
    """ONNX export or int8 quantization failed, or the exported graph is not the expected deploy form."""


class MeasureError(NasError):
    """On-host latency measurement failed (bad arguments, unrunnable model, machine too loaded)."""
