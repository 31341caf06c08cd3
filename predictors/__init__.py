"""Hardware tables, latency predictors and feasibility: reads measured tables, never measures.

Typical use::

    from predictors import load_table, fit_predictors
    from search_space import resolve_arch

    table = load_table()                      # the shipped seed table (+ user files via paths=…)
    predictors = fit_predictors(table)        # one DevicePredictor per device key
    p = predictors["T4"].predict(resolve_arch("M0", 112, 89))
    p.ms, p.low, p.high, p.feasible, p.uncertain, p.reason, p.extrapolated, p.extrapolation

    evaluate_loo(table, "T4")                 # honest leave-one-out (honest=False: the optimistic row LOO)
    suggest_specs(candidates, 10, measured)   # what to measure next on a device
"""

from predictors.calibration import COVERAGE
from predictors.domain import Domain
from predictors.errors import PredictorError, TableError
from predictors.evaluation import AUTO, evaluate_loo, loo_all, select_family, summarize_loo
from predictors.families import DEFAULT_FAMILY, FAMILIES, Family
from predictors.feasibility import HYPOTHESES, Feasibility, Hypothesis, MemoryBounds, memory_bounds
from predictors.features import DOMAIN_FEATURES, FEATURES, REFERENCE, SpecFeatures, spec_features
from predictors.fitted_tables import FittedTables, fitted
from predictors.latency import DevicePredictor, LatencyPrediction, fit_device, fit_predictors
from predictors.suggest import suggest_specs
from predictors.tables import (
    DEFAULT_CLASSES,
    DEFAULT_RESOLUTION,
    SEED_TABLE,
    TABLE_COLUMNS,
    HardwareTable,
    TableRow,
    TableWriter,
    load_table,
    measured_row,
    read_table_file,
    resolve_device,
)

__all__ = [
    "AUTO",
    "COVERAGE",
    "DEFAULT_CLASSES",
    "DEFAULT_FAMILY",
    "DEFAULT_RESOLUTION",
    "DOMAIN_FEATURES",
    "FAMILIES",
    "FEATURES",
    "HYPOTHESES",
    "REFERENCE",
    "SEED_TABLE",
    "TABLE_COLUMNS",
    "DevicePredictor",
    "Domain",
    "Family",
    "Feasibility",
    "FittedTables",
    "HardwareTable",
    "Hypothesis",
    "LatencyPrediction",
    "MemoryBounds",
    "PredictorError",
    "SpecFeatures",
    "TableError",
    "TableRow",
    "TableWriter",
    "evaluate_loo",
    "fit_device",
    "fit_predictors",
    "fitted",
    "load_table",
    "loo_all",
    "measured_row",
    "memory_bounds",
    "read_table_file",
    "resolve_device",
    "select_family",
    "spec_features",
    "suggest_specs",
    "summarize_loo",
]
