"""Export one trained model for int8 edge hardware, verified, with a model card.

:func:`export_model` re-parameterizes the model, writes ONNX fp32 (static 1×3×R×R, one fused 3×3 conv
per block) and int8 QDQ (calibrated on training images), then proves the files compute what the model
computes: fp32 parity with the PyTorch deploy model on real validation images, and int8 fidelity (top-1
agreement with fp32, accuracy and balanced accuracy of both). It measures on-host latency of both files
and writes ``model_card.json`` last. Every file is made in a staging folder and moved into place only
when all checks pass, so a failed export leaves nothing behind that claims success.

The card's fields are documented in ``docs/model_card.md`` and :mod:`trials.model_card`.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn
from torch.utils.data import Dataset

from search_space import ArchSpec, analyze
from search_space.io import atomic_write
from search_space.model import reparameterize
from trials import latency, onnx_export
from trials.errors import ExportError
from trials.evaluate import result_from_predictions
from trials.model_card import (
    CARD_FIELDS,
    CARD_NAME,
    CARD_SCHEMA_VERSION,
    ModelCard,
    load_card,
    sha256_file,
    validate_card,
)
from trials.transforms import MEAN, STD, store_size

__all__ = [
    "CARD_FIELDS",
    "CARD_NAME",
    "FP32_NAME",
    "INT8_NAME",
    "PARITY_RTOL",
    "ModelCard",
    "export_model",
    "load_card",
    "sha256_file",
    "validate_card",
]

FP32_NAME = "model_fp32.onnx"
INT8_NAME = "model_int8.onnx"
#: fp32 parity tolerance: max |ONNX − PyTorch| ≤ PARITY_RTOL × max(1, max |logit|) over the checked images.
PARITY_RTOL = 1e-3
#: How an image becomes the ONNX input (the evaluation transform of :mod:`trials.transforms`).
PREPROCESSING = {
    "layout": "NCHW float32, RGB", "mean": list(MEAN), "std": list(STD),
    "formula": "(pixel / 255 - mean) / std, per channel",
    "resize": "central square of the image, bilinear resize to store_size × store_size, central crop × crop",
}

# -- helpers ---------------------------------------------------------------------------------------------


def _tool_version() -> str:
    try:
        return importlib.metadata.version("repvgg-hwnas")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _images(dataset: Dataset, indices: Sequence[int], chunk: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """Stack dataset items into (N, 3, R, R) float32 and (N,) int64 (whole batches where the set allows)."""
    indices = [int(i) for i in indices]
    if not indices:
        raise ExportError("the validation split is empty", "use more data or a larger --val-ratio")
    batched = getattr(dataset, "__getitems__", None)
    items: list[tuple[Any, Any]] = []
    for start in range(0, len(indices), chunk):
        part = indices[start:start + chunk]
        items += batched(part) if batched else [dataset[i] for i in part]
    xs = np.stack([np.asarray(x, dtype=np.float32) for x, _ in items])
    return xs, np.asarray([int(y) for _, y in items], dtype=np.int64)


def _session(path: Path, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types
        raise ExportError(f"onnxruntime cannot load {path.name}: {exc}", "report this with the spec") from exc


def _run_onnx(path: Path, images: np.ndarray, threads: int) -> np.ndarray:
    """Logits of the static batch-1 graph for each image: (N, classes)."""
    sess = _session(path, threads)
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: images[i : i + 1]})[0] for i in range(len(images))])


@torch.no_grad()
def _run_torch(model: nn.Module, images: np.ndarray, batch: int = 256) -> np.ndarray:
    out = [model(torch.from_numpy(images[i : i + batch])).float().numpy() for i in range(0, len(images), batch)]
    return np.concatenate(out)


def _scores(logits: np.ndarray, labels: np.ndarray, classes: Sequence[str]) -> dict[str, float]:
    """Top-1 and balanced accuracy (mean recall over the classes present in ``labels``)."""
    result = result_from_predictions(labels, logits.argmax(1).astype(np.int64), list(classes))
    return {"top1": result.top1, "balanced_acc": result.balanced_acc}


def _inspect_graph(path: Path, resolution: int, spec: ArchSpec) -> dict[str, Any]:
    """Check the fp32 graph is the static, fused deploy form; return its facts for the card."""
    model = onnx.load(str(path))
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"the fp32 ONNX file is invalid: {exc}", "report this with the spec") from exc
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    inp = model.graph.input[0]
    shape = [d.dim_value if d.HasField("dim_value") else d.dim_param for d in inp.type.tensor_type.shape.dim]
    ops = [n.op_type for n in model.graph.node]
    convs = ops.count("Conv")
    problems = []
    if opset < 13:
        problems.append(f"opset {opset} < 13")
    if shape != [1, 3, resolution, resolution]:
        problems.append(f"input shape {shape} is not [1, 3, {resolution}, {resolution}]")
    if convs != spec.num_layers:
        problems.append(f"{convs} Conv nodes, expected {spec.num_layers} (one fused 3×3 conv per block)")
    extra = sorted(set(ops) - onnx_export.DEPLOY_OPS)
    if extra:
        problems.append(f"unfused ops {extra}")
    if problems:
        raise ExportError(f"the fp32 ONNX graph is not the deploy form: {'; '.join(problems)}",
                          "re-parameterize the model before export")
    return {"opset": opset, "input_name": inp.name, "input_shape": shape, "conv_nodes": convs, "ops": len(ops)}


def _measured(path: Path, threads: int, protocol: Mapping[str, int]) -> dict[str, Any]:
    m = latency.measure_onnx(path, threads=threads, **protocol)
    return {"ms": float(m.label_ms), **m.to_dict()}


def _umask() -> int:
    mask = os.umask(0o22)
    os.umask(mask)
    return mask


class _Staging:
    """A hidden folder inside ``out`` where files are made; :meth:`commit` moves them in, card last."""

    def __init__(self, out: Path) -> None:
        try:
            out.mkdir(parents=True, exist_ok=True)
            self.dir = Path(tempfile.mkdtemp(prefix=".export-", dir=out))
        except OSError as exc:
            raise ExportError(f"cannot write to output folder {out}: {exc.strerror or exc}",
                              "choose a folder you can write to with --out") from exc
        self.out = out

    def path(self, name: str) -> Path:
        return self.dir / name

    def commit(self, names: Sequence[str], card: dict[str, Any]) -> Path:
        """Move ``names`` into ``out`` (an older card there is removed first), then write the card."""
        card_path = self.out / CARD_NAME
        moved: list[Path] = []
        try:
            card_path.unlink(missing_ok=True)
            for name in names:
                os.replace(self.dir / name, self.out / name)
                moved.append(self.out / name)
            with atomic_write(card_path) as handle:
                json.dump(card, handle, indent=2)
                handle.write("\n")
            for p in [*moved, card_path]:  # temp files are created 0600; give the usual umask mode
                os.chmod(p, 0o666 & ~_umask())
        except BaseException:
            for p in moved:
                p.unlink(missing_ok=True)
            raise
        return card_path

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


# -- the export ------------------------------------------------------------------------------------------


def export_model(
    model: nn.Module,
    spec: ArchSpec,
    calibration_set: Dataset,
    val_set: Dataset,
    classes: Sequence[str],
    out_dir: str | os.PathLike[str],
    *,
    per_channel: bool = False,
    calibration_images: int = 256,
    threads: int = 1,
    opset: int = 17,
    latency_protocol: Mapping[str, int] | None = None,
    predicted: Sequence[Mapping[str, Any]] = (),
    training: Mapping[str, Any] | None = None,
    data_info: Mapping[str, Any] | None = None,
    source: Mapping[str, Any] | None = None,
    attach: Mapping[str, str | os.PathLike[str]] | None = None,
    seed: int = 0,
    notes: Sequence[str] = (),
    on_step: Callable[[str], None] | None = None,
) -> ModelCard:
    """Export a trained ``model`` of ``spec`` into ``out_dir`` and verify it; return its :class:`ModelCard`.

    Writes ``model_fp32.onnx``, ``model_int8.onnx`` (QDQ, calibrated on ``calibration_images`` images of
    ``calibration_set``: training images with the evaluation transform, ``DataBundle.train_eval``) and
    ``model_card.json`` (written last). ``val_set`` gives the parity and accuracy images; ``predicted``
    the per-device latency predictions (plain dicts); ``attach`` maps names like ``"checkpoint"`` to
    files moved into ``out_dir`` with the export and checksummed; ``notes`` start the card's notes;
    ``latency_protocol`` (warmup, runs, sessions) goes to :func:`trials.latency.measure_onnx`.
    Raises :class:`ExportError` when a check fails, leaving no new file in ``out_dir``.
    """
    step = on_step or (lambda _text: None)
    out = Path(out_dir)
    if calibration_images < 1:
        raise ExportError(f"calibration_images is {calibration_images}", "calibrate on at least 1 image")
    if threads < 1:
        raise ExportError(f"threads is {threads}", "use 1 or more onnxruntime threads")
    if len(classes) != spec.num_classes:
        raise ExportError(f"the model has {spec.num_classes} classes but the data has {len(classes)}",
                          "export with the data the model was trained on")
    stage = _Staging(out)
    try:
        step("re-parameterizing")
        model = model.cpu().float().eval()
        deploy = reparameterize(model)
        val_x, val_y = _images(val_set, range(len(val_set)))  # type: ignore[arg-type]
        if val_x.shape[1:] != (3, spec.resolution, spec.resolution):
            raise ExportError(f"validation images are {list(val_x.shape[1:])}, the spec wants "
                              f"[3, {spec.resolution}, {spec.resolution}]", "load the data at the spec's resolution")
        torch_logits = _run_torch(deploy, val_x)
        reparam_diff = float(np.abs(_run_torch(model, val_x[:256]) - torch_logits[:256]).max())

        step("exporting fp32 ONNX")
        fp32 = onnx_export.export_onnx(deploy, stage.path(FP32_NAME), spec.resolution, opset=opset)
        graph = _inspect_graph(Path(fp32), spec.resolution, spec)

        step("checking fp32 parity")
        fp32_logits = _run_onnx(Path(fp32), val_x, threads)
        scale = float(np.abs(torch_logits).max())
        tol = PARITY_RTOL * max(1.0, scale)
        max_diff = float(np.abs(fp32_logits - torch_logits).max())
        parity = {"images": len(val_x), "max_abs_diff": max_diff, "logit_scale": scale, "tolerance": tol,
                  "rtol": PARITY_RTOL, "reparam_max_abs_diff": reparam_diff,
                  "passed": max_diff <= tol and reparam_diff <= tol}
        if not parity["passed"]:
            which = "fp32 ONNX" if max_diff > tol else "re-parameterized model"
            raise ExportError(
                f"parity check failed: the {which} differs from the trained model by "
                f"{max(max_diff, reparam_diff):.3g} > tolerance {tol:.3g}; nothing was written",
                "report this with the spec and checkpoint")

        step("quantizing to int8")
        rng = np.random.default_rng(seed)
        n_cal = min(calibration_images, len(calibration_set))  # type: ignore[arg-type]
        cal_x, _ = _images(calibration_set, rng.permutation(len(calibration_set))[:n_cal])  # type: ignore[arg-type]
        int8 = onnx_export.quantize_int8(Path(fp32), stage.path(INT8_NAME), (x[None] for x in cal_x),
                                         per_channel=per_channel)
        qdq = sum(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in onnx.load(str(int8)).graph.node)
        if qdq == 0:
            raise ExportError("the int8 graph has no QuantizeLinear/DequantizeLinear nodes", "report this")

        step("checking int8 fidelity")
        int8_logits = _run_onnx(Path(int8), val_x, threads)
        acc_torch, acc_fp32, acc_int8 = (_scores(x, val_y, classes) for x in (torch_logits, fp32_logits, int8_logits))
        agreement = float((int8_logits.argmax(1) == fp32_logits.argmax(1)).mean())
        drop = acc_fp32["top1"] - acc_int8["top1"]

        step("measuring on-host latency")
        protocol = dict(latency_protocol or {})
        lat_fp32, lat_int8 = _measured(Path(fp32), threads, protocol), _measured(Path(int8), threads, protocol)

        files = {"fp32": FP32_NAME, "int8": INT8_NAME}
        for name, src in (attach or {}).items():
            target = f"{name}{Path(src).suffix}"
            shutil.move(str(src), stage.path(target))
            files[name] = target
        cost = analyze(spec)
        notes = list(notes)
        if drop > 0.01:
            notes.append(f"int8 top-1 is {100 * drop:.1f} points below fp32"
                         + ("; the qarepvgg block usually quantizes better" if spec.block == "repvgg" else ""))
        if agreement < 0.99:
            notes.append(f"int8 and fp32 disagree on {100 * (1 - agreement):.1f} % of validation images")
        card = {
            "schema_version": CARD_SCHEMA_VERSION,
            "tool": {"name": "repvgg-hwnas", "version": _tool_version()},
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "spec": spec.to_string(), "spec_hash": spec.hash, "arch": spec.to_dict(), "block": spec.block,
            "classes": list(classes),
            "cost": {"macs": cost.macs, "params": cost.params, "peak_memory_kib": cost.peak_memory_kib,
                     "peak_layer": cost.peak_layer, "weight_bytes": cost.weight_bytes},
            "files": {k: {"path": v, "sha256": sha256_file(stage.path(v)), "bytes": stage.path(v).stat().st_size}
                      for k, v in files.items()},
            "onnx": {**graph, "preprocessing": PREPROCESSING | {"store_size": store_size(spec.resolution),
                                                                "crop": spec.resolution}},
            "quantization": {"format": "QDQ", "per_channel": per_channel, "calibration_images": n_cal,
                             "calibration_source": "train split, seeded random sample", "qdq_nodes": qdq,
                             "reduce_range": onnx_export.default_reduce_range(), "onnxruntime": ort.__version__},
            "parity": parity,
            "accuracy": {"val_images": len(val_y), "pytorch": acc_torch, "fp32": acc_fp32, "int8": acc_int8,
                         "int8_agreement": agreement, "int8_drop": drop},
            "latency": {"measured": {"fp32": lat_fp32, "int8": lat_int8, "threads": threads,
                                     "cpu": str(lat_fp32.get("cpu") or platform.processor() or platform.machine())},
                        "predicted": [dict(p) for p in predicted]},
            "training": dict(training) if training is not None else None,
            "data": dict(data_info or {}),
            "source": dict(source or {"kind": "model"}),
            "notes": notes,
        }
        validate_card(card)
        step("writing the model card")
        card_path = stage.commit(list(files.values()), card)
    finally:
        stage.close()
    return ModelCard(card, card_path)
