"""trials package."""

# data work: data sets, statistics, evaluation (data, evaluate, stats);
# measurement work: ONNX export, int8 quantization, on-host latency (latency, onnx_export)
# training work: training loop, losses, checkpoints, proxy accuracy, zero-cost scores (checkpoint, losses,
#   proxy, train, zero_cost)
# export work: verified export of one trained model and its model card (export, model_card)
from trials.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from trials.data import DataBundle, DataReport, load_data
from trials.errors import DataError, ExportError, MeasureError, TrainError
from trials.evaluate import EvalResult, evaluate
from trials.export import ModelCard, export_model, load_card, validate_card
from trials.latency import Measurement, measure_onnx, measure_specs
from trials.losses import LOSSES, build_loss
from trials.onnx_export import export_onnx, quantize_int8
from trials.proxy import ProxyConfig, ProxyResult, proxy_accuracy
from trials.stats import DatasetStats, dataset_stats
from trials.train import TrainConfig, TrainResult, train
from trials.zero_cost import zero_cost_scores

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
    "evaluate",
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
    "train",
    "validate_card",
    "zero_cost_scores",
]
