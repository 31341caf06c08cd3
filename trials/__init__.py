"""trials package."""

# measurement work: ONNX export, int8 quantization, on-host latency
from trials.errors import DataError, ExportError, MeasureError, TrainError
from trials.latency import Measurement, measure_onnx, measure_specs
from trials.onnx_export import export_onnx, quantize_int8

__all__ = [
    "DataError",
    "ExportError",
    "MeasureError",
    "Measurement",
    "TrainError",
    "export_onnx",
    "measure_onnx",
    "measure_specs",
    "quantize_int8",
]
