"""trials package."""

# data work: data sets, statistics, evaluation (data, evaluate, stats);
# measurement work: ONNX export, int8 quantization, on-host latency (latency, onnx_export)
from trials.data import DataBundle, DataReport, load_data
from trials.errors import DataError, ExportError, MeasureError, TrainError
from trials.evaluate import EvalResult, evaluate
from trials.latency import Measurement, measure_onnx, measure_specs
from trials.onnx_export import export_onnx, quantize_int8
from trials.stats import DatasetStats, dataset_stats

__all__ = [
    "DataBundle",
    "DataError",
    "DataReport",
    "DatasetStats",
    "EvalResult",
    "ExportError",
    "MeasureError",
    "Measurement",
    "TrainError",
    "dataset_stats",
    "evaluate",
    "export_onnx",
    "load_data",
    "measure_onnx",
    "measure_specs",
    "quantize_int8",
]
