"""Hardware tables, latency predictors and feasibility: reads measured tables, never measures.

Typical use::

    from predictors import load_table, fit_predictors
    from search_space import resolve_arch

    table = load_table()                      # the shipped seed table (+ user files via paths=…)
    predictors = fit_predictors(table)        # one DevicePredictor per device key
    p = predictors["T4"].predict(resolve_arch("M0", 112, 89))
    p.ms, p.low, p.high, p.feasible, p.reason
"""

from predictors.errors import PredictorError, TableError
from predictors.evaluation import evaluate_loo, summarize_loo
from predictors.families import DEFAULT_FAMILY, FAMILIES, Family
from predictors.feasibility import Feasibility, MemoryBounds, memory_bounds
from predictors.features import FEATURES, REFERENCE, SpecFeatures, spec_features
from predictors.latency import DevicePredictor, LatencyPrediction, fit_device, fit_predictors
from predictors.tables import (
    DEFAULT_CLASSES,
    DEFAULT_RESOLUTION,
    SEED_TABLE,
    HardwareTable,
    TableRow,
    load_table,
    read_table_file,
    resolve_device,
)

__all__ = [
    "DEFAULT_CLASSES",
    "DEFAULT_FAMILY",
    "DEFAULT_RESOLUTION",
    "FAMILIES",
    "FEATURES",
    "REFERENCE",
    "SEED_TABLE",
    "DevicePredictor",
    "Family",
    "Feasibility",
    "HardwareTable",
    "LatencyPrediction",
    "MemoryBounds",
    "PredictorError",
    "SpecFeatures",
    "TableError",
    "TableRow",
    "evaluate_loo",
    "fit_device",
    "fit_predictors",
    "load_table",
    "memory_bounds",
    "read_table_file",
    "resolve_device",
    "spec_features",
    "summarize_loo",
]
