"""ONNX export of a deploy-form RepVGG (fp32) and its static int8 quantization (QDQ) with onnxruntime.

The fp32 graph is the plain deploy network: ``Conv → Relu`` × layers, a global average pool, ``Flatten``
and ``Gemm``; no BatchNorm, no branches (re-parameterize first). The input is static ``1×3×R×R``, named
``input``; the output is ``logits``.

int8 follows onnxruntime's guidance for CPU inference: QDQ format, ``uint8`` activations and ``int8``
weights (U8S8), per-tensor weights by default (fastest on CPU), MinMax calibration, and ``reduce_range``
(7-bit weights) on x86 CPUs without VNNI, whose AVX2 ``u8×s8`` kernels can saturate 16-bit sums.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import platform
import tempfile
import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from search_space.io import atomic_path
from search_space.spec import ArchSpec
from trials.errors import ExportError

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
#: The only op types a deploy-form RepVGG exports to (the pool may appear as either op).
DEPLOY_OPS = frozenset({"Conv", "Relu", "GlobalAveragePool", "ReduceMean", "Flatten", "Gemm"})


def _check_deploy(model) -> None:
    """Refuse a model that still has BatchNorm or multi-branch blocks (export would not be the deploy form)."""
    from torch import nn

    if getattr(model, "deploy", True) is False:
        raise ExportError(
            "the model is in training (multi-branch) form",
            "re-parameterize it first: search_space.model.reparameterize(model)",
        )
    if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        raise ExportError("the model still has BatchNorm layers", "export the fused deploy form")


def export_onnx(model, path: str | Path, resolution: int, opset: int = 17) -> Path:
    """Write ``model`` (deploy form) as fp32 ONNX with a static 1×3×R×R input; return the path.

    The graph is checked with ``onnx.checker`` and must hold only :data:`DEPLOY_OPS`; the file is
    written atomically. Raises :class:`ExportError` on a training-form model or a failed export.
    """
    import onnx
    import torch

    _check_deploy(model)
    if resolution < 1:
        raise ExportError(f"resolution {resolution} px is not positive", "give the model's input size")
    target = Path(path)
    if not target.parent.is_dir():
        raise ExportError(f"folder {str(target.parent)!r} does not exist", "create it or choose another path")
    was_training = model.training
    model.eval()
    dummy = torch.randn(1, 3, resolution, resolution)  # (1, 3, R, R)
    try:
        with atomic_path(target) as tmp, torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter announces its deprecation
            torch.onnx.export(
                model, (dummy,), str(tmp), opset_version=opset, dynamo=False, do_constant_folding=True,
                input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            )
            graph = onnx.load(str(tmp))
            if _drop_constant_identities(graph):
                onnx.save(graph, str(tmp))
            onnx.checker.check_model(graph, full_check=True)
            ops = {n.op_type for n in graph.graph.node}
            if not ops <= DEPLOY_OPS:
                raise ExportError(
                    f"exported graph has non-deploy ops {sorted(ops - DEPLOY_OPS)}",
                    "export a re-parameterized RepVGG (3×3 convs, ReLU, pool, linear head)",
                )
    except ExportError:
        raise
    except (RuntimeError, ValueError, onnx.checker.ValidationError) as exc:
        raise ExportError(f"ONNX export failed: {exc}", "check the model runs on a 1×3×R×R input") from exc
    except OSError as exc:
        raise ExportError(f"cannot write {str(target)!r}: {exc}", "choose a writable path") from exc
    finally:
        model.train(was_training)
    return target


def _drop_constant_identities(model) -> int:
    """Remove ``Identity`` nodes that alias an initializer (the exporter emits them for equal tensors, e.g.
    two all-zero biases); their consumers read the initializer directly. Returns how many were removed."""
    constants = {init.name for init in model.graph.initializer}
    outputs = {o.name for o in model.graph.output}
    alias = {
        n.output[0]: n.input[0] for n in model.graph.node
        if n.op_type == "Identity" and n.input[0] in constants and n.output[0] not in outputs
    }
    if not alias:
        return 0
    keep = [n for n in model.graph.node if not (n.op_type == "Identity" and n.output[0] in alias)]
    for node in keep:
        for i, name in enumerate(node.input):
            if name in alias:
                node.input[i] = alias[name]
    del model.graph.node[:]
    model.graph.node.extend(keep)
    return len(alias)


def has_vnni() -> bool:
    """True when this x86 CPU has a VNNI dot-product instruction (always False off x86/Linux)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(f in flags for f in ("avx512_vnni", "avx_vnni", "amx_int8"))


def default_reduce_range() -> bool:
    """onnxruntime's CPU guidance: 7-bit weights on x86 without VNNI, full 8 bits elsewhere."""
    is_x86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")
    return is_x86 and not has_vnni()


class _Batches:
    """A ``CalibrationDataReader`` over float32 NCHW arrays (built lazily so onnxruntime loads only when used)."""

    @staticmethod
    def make(batches: Iterable[np.ndarray], input_name: str):
        from onnxruntime.quantization import CalibrationDataReader

        class Reader(CalibrationDataReader):
            def __init__(self) -> None:
                self._it: Iterator[np.ndarray] = iter(batches)
                self.count = 0

            def get_next(self):
                batch = next(self._it, None)
                if batch is None:
                    return None
                array = np.ascontiguousarray(batch, dtype=np.float32)
                if array.ndim == 3:
                    array = array[None]
                self.count += 1
                return {input_name: array}

        return Reader()


#: Activation-range calibration methods of onnxruntime's ``quantize_static`` (our name → its enum name).
#: (Its fourth, ``Distribution``, is for float8 types and does not apply to int8.)
CALIBRATION_METHODS = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}


def quantize_int8(
    fp32_path: str | Path,
    int8_path: str | Path,
    calibration: Iterable[np.ndarray],
    per_channel: bool = False,
    *,
    reduce_range: bool | None = None,
    preprocess: bool = False,
    method: str = "minmax",
) -> Path:
    """Quantize an fp32 ONNX model to int8 QDQ (uint8 activations, int8 weights) with static calibration.

    ``calibration`` yields float32 batches ``(N, 3, R, R)`` (or single ``(3, R, R)`` images) in the
    model's input layout; a 1×…-input graph takes one image per batch. ``reduce_range=None`` follows
    onnxruntime's CPU guidance (:func:`default_reduce_range`). ``preprocess`` runs
    ``quant_pre_process`` (shape inference + graph optimization) first: off by default, because on the
    exported deploy graph (static shapes, constants folded) it changes nothing and costs ~1 s per model.
    ``method`` is the activation-range calibration, one of :data:`CALIBRATION_METHODS` (onnxruntime's
    MinMax, Entropy or Percentile). The output is written atomically.
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    source, target = Path(fp32_path), Path(int8_path)
    if not source.is_file():
        raise ExportError(f"fp32 model {str(source)!r} not found", "export it first with export_onnx")
    if method not in CALIBRATION_METHODS:
        raise ExportError(f"unknown calibration method {method!r}",
                          f"use one of {', '.join(CALIBRATION_METHODS)}")
    if not target.parent.is_dir():
        raise ExportError(f"folder {str(target.parent)!r} does not exist", "create it or choose another path")
    graph = onnx.load(str(source), load_external_data=False)
    input_name = graph.graph.input[0].name
    batches = _one_per_batch(calibration, graph)
    first = next(batches, None)
    if first is None:
        raise ExportError("no calibration batches were given", "pass at least one input batch")
    reader = _Batches.make(itertools.chain([first], batches), input_name)
    if reduce_range is None:
        reduce_range = default_reduce_range()
    try:
        with atomic_path(target) as tmp, tempfile.TemporaryDirectory(prefix="nas-quant-") as scratch:
            model_in = source
            if preprocess:
                model_in = Path(scratch) / "pre.onnx"
                with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                    quant_pre_process(str(source), str(model_in), skip_symbolic_shape=True)
            with _quiet_root_warnings(), contextlib.redirect_stdout(io.StringIO()):  # Entropy/Percentile print
                quantize_static(
                    str(model_in), str(tmp), reader,
                    quant_format=QuantFormat.QDQ, per_channel=per_channel, reduce_range=reduce_range,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=getattr(CalibrationMethod, CALIBRATION_METHODS[method]),
                )
            onnx.checker.check_model(str(tmp))
    except ExportError:
        raise
    except Exception as exc:  # onnxruntime raises plain Exception subclasses of many kinds
        raise ExportError(f"int8 quantization failed: {exc}", "check the calibration batches' shape") from exc
    return target


@contextlib.contextmanager
def _quiet_root_warnings() -> Iterator[None]:
    """Drop onnxruntime's root-logger advice to pre-process while quantizing (library code does not print)."""
    import logging

    def keep(record: logging.LogRecord) -> bool:
        return "pre-process" not in record.getMessage()

    root = logging.getLogger()
    root.addFilter(keep)
    try:
        yield
    finally:
        root.removeFilter(keep)


def _one_per_batch(batches: Iterable[np.ndarray], graph) -> Iterator[np.ndarray]:
    """Split batches to the graph's static batch size (1 for :func:`export_onnx` graphs)."""
    dims = graph.graph.input[0].type.tensor_type.shape.dim
    static = dims[0].dim_value if dims and dims[0].dim_value > 0 else None
    for batch in batches:
        array = np.asarray(batch, dtype=np.float32)
        if array.ndim == 3:
            array = array[None]
        if static is None or array.shape[0] == static:
            yield array
        else:
            for start in range(0, array.shape[0] - static + 1, static):
                yield array[start:start + static]


# -- models for timing ----------------------------------------------------------------------------


def timing_model(spec: ArchSpec, seed: int = 0):
    """The deploy form of ``spec`` with He-normal weights and zero biases (activations stay O(1), as in a
    trained network, so no run is slowed by denormals); weights do not otherwise change dense-conv timing."""
    import torch
    from torch import nn

    from search_space.model import build_model

    torch.manual_seed(seed)
    model = build_model(spec, deploy=True).eval()
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    return model


def export_for_timing(
    spec: ArchSpec, folder: str | Path, precisions: Sequence[str] = ("fp32", "int8"), *, seed: int = 0,
    calibration_images: int = 8,
) -> dict[str, Path]:
    """Export :func:`timing_model` of ``spec`` into ``folder`` as fp32 ONNX and, if asked, int8 QDQ
    calibrated on ``calibration_images`` seeded random-normal images. Returns ``{precision: path}``."""
    folder = Path(folder)
    fp32 = export_onnx(timing_model(spec, seed), folder / f"{spec.hash}.onnx", spec.resolution)
    paths = {"fp32": fp32}
    if "int8" in precisions:
        rng = np.random.default_rng(seed)
        images = (rng.standard_normal((1, 3, spec.resolution, spec.resolution), dtype=np.float32)
                  for _ in range(calibration_images))
        paths["int8"] = quantize_int8(fp32, folder / f"{spec.hash}.int8.onnx", images)
    return {p: paths[p] for p in precisions}
