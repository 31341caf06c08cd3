"""trials: data, training, accuracy proxies, evaluation, ONNX export and quantization, on-host latency.

Import from the module that owns a name (``from trials.train import train``,
``from trials.config import TrainConfig``); ``import trials`` imports nothing else, so it stays torch-free.
"""
