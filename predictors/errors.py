"""Errors of the predictors package: a malformed hardware table, or a predictor that cannot answer."""

from __future__ import annotations

from search_space.errors import NasError


class TableError(NasError, ValueError):
    """A hardware latency table is malformed; the message names ``file:line`` and what is wrong."""


class PredictorError(NasError, ValueError):
    """A predictor cannot be fitted, loaded or asked (unknown device, too few points, bad JSON)."""
