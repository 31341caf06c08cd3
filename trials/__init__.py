"""trials: data, training, accuracy proxies, evaluation, ONNX export and quantization, on-host latency.

Public names are re-exported here lazily: ``import trials`` (or ``trials.errors``) does not import torch;
the submodule that defines a name is imported the first time the name is used.

The functions ``train`` and ``evaluate`` share their names with their submodules, so they are not
re-exported (a loaded submodule would shadow them): use ``from trials.train import train`` and
``from trials.evaluate import evaluate``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from trials.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
    from trials.data import DataBundle, DataReport, load_data
    from trials.errors import DataError, ExportError, MeasureError, TrainError
    from trials.evaluate import EvalResult
    from trials.export import ModelCard, export_model, load_card, validate_card
    from trials.latency import Measurement, measure_onnx, measure_specs
    from trials.losses import LOSSES, build_loss
    from trials.onnx_export import export_onnx, quantize_int8
    from trials.proxy import ProxyConfig, ProxyResult, proxy_accuracy
    from trials.stats import DatasetStats, dataset_stats
    from trials.train import TrainConfig, TrainResult
    from trials.zero_cost import zero_cost_scores

#: public name -> defining submodule
_EXPORTS = {
    "load_checkpoint": "trials.checkpoint",
    "model_from_checkpoint": "trials.checkpoint",
    "save_checkpoint": "trials.checkpoint",
    "DataBundle": "trials.data",
    "DataReport": "trials.data",
    "load_data": "trials.data",
    "DataError": "trials.errors",
    "ExportError": "trials.errors",
    "MeasureError": "trials.errors",
    "TrainError": "trials.errors",
    "EvalResult": "trials.evaluate",
    "ModelCard": "trials.export",
    "export_model": "trials.export",
    "load_card": "trials.export",
    "validate_card": "trials.export",
    "Measurement": "trials.latency",
    "measure_onnx": "trials.latency",
    "measure_specs": "trials.latency",
    "LOSSES": "trials.losses",
    "build_loss": "trials.losses",
    "export_onnx": "trials.onnx_export",
    "quantize_int8": "trials.onnx_export",
    "ProxyConfig": "trials.proxy",
    "ProxyResult": "trials.proxy",
    "proxy_accuracy": "trials.proxy",
    "DatasetStats": "trials.stats",
    "dataset_stats": "trials.stats",
    "TrainConfig": "trials.train",
    "TrainResult": "trials.train",
    "zero_cost_scores": "trials.zero_cost",
}

__all__ = [
    "LOSSES",
    "DataBundle",
    "DataError",
    "DataReport",
    "DatasetStats",
    "EvalResult",
    "ExportError",
    "MeasureError",
    "Measurement",
    "ModelCard",
    "ProxyConfig",
    "ProxyResult",
    "TrainConfig",
    "TrainError",
    "TrainResult",
    "build_loss",
    "dataset_stats",
    "export_model",
    "export_onnx",
    "load_card",
    "load_checkpoint",
    "load_data",
    "measure_onnx",
    "measure_specs",
    "model_from_checkpoint",
    "proxy_accuracy",
    "quantize_int8",
    "save_checkpoint",
    "validate_card",
    "zero_cost_scores",
]

def __getattr__(name: str) -> Any:
    """Import the submodule that defines ``name`` on first use (PEP 562)."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'trials' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
