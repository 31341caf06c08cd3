"""The stages of an export, each returning a typed section of the model card.

:func:`inspect_graph` → the ``onnx`` section, :func:`check_parity` → ``parity``,
:func:`trials.int8_stage.quantize_within_budget` → ``quantization`` (its own module: the int8 ladder),
:func:`check_fidelity` (per split) → ``accuracy``, :func:`measure_latency` → ``latency``.
:func:`trials.export.export_model` runs them in that order; each section's ``to_dict()`` is its part of
``model_card.json`` (every field is documented in ``docs/model_card.md``). The comparisons take logits
(``(N, classes)`` arrays), so each rule can be checked on its own; :func:`run_torch` and :func:`run_onnx`
produce them.
"""

from __future__ import annotations

import platform
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnx
import onnxruntime as ort
import torch

from trials import onnx_export
from trials.errors import ExportError
from trials.evaluate import result_from_predictions
from trials.latency import RUNS, SESSIONS, WARMUP, Measurement, measure_onnx
from trials.transforms import MEAN, STD, store_size

if TYPE_CHECKING:
    from torch import nn
    from torch.utils.data import Dataset

    from search_space import ArchSpec

#: A JSON object of the card.
JSONDict = dict[str, object]

#: fp32 parity tolerance: max |ONNX − PyTorch| ≤ PARITY_RTOL × max(1, max |logit|) over the checked images.
PARITY_RTOL = 1e-3
#: Train-form and deploy-form PyTorch logits are compared on this many (the first) test images.
REPARAM_IMAGES = 256
#: How an image becomes the ONNX input (the evaluation transform of :mod:`trials.transforms`).
PREPROCESSING: JSONDict = {
    "layout": "NCHW float32, RGB", "mean": list(MEAN), "std": list(STD),
    "formula": "(pixel / 255 - mean) / std, per channel",
    "resize": "central square of the image, bilinear resize to store_size × store_size, central crop × crop",
}
#: int8 fidelity below these adds a note to the card (reported, not enforced).
DROP_NOTE, AGREEMENT_NOTE = 0.01, 0.99

# -- running the model in each form ----------------------------------------------------------------------


def load_images(dataset: Dataset, indices: Sequence[int], chunk: int = 512,
                what: str = "the data set") -> tuple[np.ndarray, np.ndarray]:
    """Stack dataset items into (N, 3, R, R) float32 images and (N,) int64 labels (whole batches where the
    set allows); no indices at all is an :class:`ExportError` naming ``what``."""
    indices = [int(i) for i in indices]
    if not indices:
        raise ExportError(f"{what} is empty", "hold out a share of every class for it (or use more images)")
    batched = getattr(dataset, "__getitems__", None)
    items: list[tuple[torch.Tensor, int]] = []
    for start in range(0, len(indices), chunk):
        part = indices[start:start + chunk]
        items += batched(part) if batched else [dataset[i] for i in part]
    xs = np.stack([np.asarray(x, dtype=np.float32) for x, _ in items])
    return xs, np.asarray([int(y) for _, y in items], dtype=np.int64)


def run_onnx(path: Path, images: np.ndarray, ort_threads: int) -> np.ndarray:
    """Logits (N, classes) of a static batch-1 ONNX graph, one image at a time, on the CPU."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = ort_threads
    options.inter_op_num_threads = 1
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types
        raise ExportError(f"onnxruntime cannot load {path.name}: {exc}", "report this with the spec") from exc
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: images[i : i + 1]})[0] for i in range(len(images))])


@torch.no_grad()
def run_torch(model: nn.Module, images: np.ndarray, batch: int = 256) -> np.ndarray:
    """Logits (N, classes) of a PyTorch model (in the mode it is in) on the CPU."""
    out = [model(torch.from_numpy(images[i : i + batch])).float().numpy() for i in range(0, len(images), batch)]
    return np.concatenate(out)


# -- the fp32 graph ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GraphSection:
    """The card's ``onnx`` section: facts of the fp32 graph (the int8 graph has the same input and opset)."""

    opset: int
    input_name: str
    input_shape: list[int]
    conv_nodes: int
    ops: int
    resolution: int

    def to_dict(self) -> JSONDict:
        """The section as card JSON, with the preprocessing that makes an image the input."""
        preprocessing = {**PREPROCESSING, "store_size": store_size(self.resolution), "crop": self.resolution}
        return {"opset": self.opset, "input_name": self.input_name, "input_shape": list(self.input_shape),
                "conv_nodes": self.conv_nodes, "ops": self.ops, "preprocessing": preprocessing}


def inspect_graph(path: Path, spec: ArchSpec) -> GraphSection:
    """Check that the fp32 file is valid ONNX in the static, fused deploy form of ``spec``; return its facts."""
    model = onnx.load(str(path))
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"the fp32 ONNX file is invalid: {exc}", "report this with the spec") from exc
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    inp = model.graph.input[0]
    shape = [d.dim_value if d.HasField("dim_value") else d.dim_param for d in inp.type.tensor_type.shape.dim]
    ops = [n.op_type for n in model.graph.node]
    problems = []
    if opset < 13:
        problems.append(f"opset {opset} < 13")
    if shape != [1, 3, spec.resolution, spec.resolution]:
        problems.append(f"input shape {shape} is not [1, 3, {spec.resolution}, {spec.resolution}]")
    if ops.count("Conv") != spec.num_layers:
        problems.append(f"{ops.count('Conv')} Conv nodes, expected {spec.num_layers} (one fused 3×3 conv per block)")
    if set(ops) - onnx_export.DEPLOY_OPS:
        problems.append(f"unfused ops {sorted(set(ops) - onnx_export.DEPLOY_OPS)}")
    if problems:
        raise ExportError(f"the fp32 ONNX graph is not the deploy form: {'; '.join(problems)}",
                          "re-parameterize the model before export")
    return GraphSection(opset, inp.name, [int(d) for d in shape], ops.count("Conv"), len(ops), spec.resolution)


# -- fp32 parity -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ParitySection:
    """The card's ``parity`` section: how far the fp32 file and the train form are from the deploy model."""

    images: int
    max_abs_diff: float
    logit_scale: float
    reparam_max_abs_diff: float
    rtol: float = PARITY_RTOL

    @property
    def tolerance(self) -> float:
        """The largest allowed difference: ``rtol × max(1, logit_scale)``."""
        return self.rtol * max(1.0, self.logit_scale)

    @property
    def passed(self) -> bool:
        """Both differences within the tolerance (false for NaN differences)."""
        return self.max_abs_diff <= self.tolerance and self.reparam_max_abs_diff <= self.tolerance

    def require(self) -> None:
        """Raise :class:`ExportError` unless the check passed."""
        if self.passed:
            return
        which = "fp32 ONNX" if not self.max_abs_diff <= self.tolerance else "re-parameterized model"
        worst = max(self.max_abs_diff, self.reparam_max_abs_diff)
        raise ExportError(f"parity check failed: the {which} differs from the trained model by {worst:.3g} > "
                          f"tolerance {self.tolerance:.3g}; nothing was written",
                          "report this with the spec and checkpoint")

    def to_dict(self) -> JSONDict:
        """The section as card JSON."""
        return {"images": self.images, "max_abs_diff": self.max_abs_diff, "logit_scale": self.logit_scale,
                "tolerance": self.tolerance, "rtol": self.rtol, "reparam_max_abs_diff": self.reparam_max_abs_diff,
                "passed": self.passed}


def check_parity(deploy: np.ndarray, fp32: np.ndarray, train_form: np.ndarray) -> ParitySection:
    """Compare the fp32 ONNX logits and the train-form PyTorch logits with the PyTorch deploy model's.

    ``deploy`` and ``fp32`` are (N, classes) over the same images; ``train_form`` covers the first of them.
    """
    scale = float(np.abs(deploy).max())
    return ParitySection(
        images=len(deploy), max_abs_diff=float(np.abs(fp32 - deploy).max()), logit_scale=scale,
        reparam_max_abs_diff=float(np.abs(train_form - deploy[: len(train_form)]).max()))


# -- int8 fidelity -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scores:
    """Top-1, balanced accuracy (mean recall over the classes present) and the worst class's recall of one
    form of the model on one split."""

    top1: float
    balanced_acc: float
    worst_class_recall: float
    worst_class: str


def scores(logits: np.ndarray, labels: np.ndarray, classes: Sequence[str]) -> Scores:
    """The :class:`Scores` of (N, classes) logits against (N,) labels."""
    result = result_from_predictions(labels, logits.argmax(1).astype(np.int64), list(classes))
    worst = result.per_class[0]  # sorted ascending by recall; classes without images come last
    return Scores(result.top1, result.balanced_acc, float(worst["acc"] or 0.0), str(worst["name"]))


def per_class_table(labels: np.ndarray, classes: Sequence[str], fp32: np.ndarray,
                    int8: np.ndarray) -> list[JSONDict]:
    """One row per class: ``class, name, images, fp32_correct, fp32_recall, int8_correct, int8_recall``,
    ascending by fp32 recall (then images, then index); classes without images last, recall null."""
    k = len(classes)
    images = np.bincount(labels, minlength=k)
    hits = {form: np.bincount(labels[logits.argmax(1) == labels], minlength=k)
            for form, logits in (("fp32", fp32), ("int8", int8))}
    rows: list[JSONDict] = []
    for c in range(k):
        n = int(images[c])
        row: JSONDict = {"class": c, "name": str(classes[c]), "images": n}
        for form, correct in hits.items():
            row[f"{form}_correct"] = int(correct[c])
            row[f"{form}_recall"] = float(correct[c] / n) if n else None
        rows.append(row)
    return sorted(rows, key=lambda r: (r["images"] == 0, r["fp32_recall"] or 0.0, r["images"], r["class"]))


@dataclass(frozen=True)
class FidelitySection:
    """The three forms' scores on one split, how often int8 agrees with fp32, and the per-class table."""

    split: str
    images: int
    pytorch: Scores
    fp32: Scores
    int8: Scores
    int8_agreement: float
    per_class: tuple[JSONDict, ...] = ()

    @property
    def int8_drop(self) -> float:
        """fp32 top-1 − int8 top-1 (a fraction: 0.01 is one point)."""
        return self.fp32.top1 - self.int8.top1

    def notes(self, block: str) -> list[str]:
        """Warnings for the card when int8 loses more than a point or disagrees on over 1 % of images."""
        notes = []
        if self.int8_drop > DROP_NOTE:
            advice = "; the qarepvgg block usually quantizes better" if block == "repvgg" else ""
            notes.append(f"int8 top-1 is {100 * self.int8_drop:.1f} points below fp32 on the {self.split} split"
                         f"{advice}")
        if self.int8_agreement < AGREEMENT_NOTE:
            notes.append(f"int8 and fp32 disagree on {100 * (1 - self.int8_agreement):.1f} % of {self.split} images")
        return notes

    def to_dict(self, per_class: bool = True) -> JSONDict:
        """The section as card JSON (with the per-class table unless ``per_class`` is false)."""
        body: JSONDict = {"split": self.split, "images": self.images, "pytorch": asdict(self.pytorch),
                          "fp32": asdict(self.fp32), "int8": asdict(self.int8), "int8_agreement": self.int8_agreement,
                          "int8_drop": self.int8_drop}
        if per_class:
            body["per_class"] = [dict(r) for r in self.per_class]
        return body


def check_fidelity(split: str, labels: np.ndarray, classes: Sequence[str], *, pytorch: np.ndarray,
                   fp32: np.ndarray, int8: np.ndarray) -> FidelitySection:
    """Score the PyTorch deploy, fp32 ONNX and int8 ONNX logits (each (N, classes)) of ``split`` against
    ``labels``, with the per-class table of fp32 and int8."""
    agreement = float((int8.argmax(1) == fp32.argmax(1)).mean())
    return FidelitySection(split, len(labels), scores(pytorch, labels, classes), scores(fp32, labels, classes),
                           scores(int8, labels, classes), agreement,
                           tuple(per_class_table(labels, classes, fp32, int8)))


@dataclass(frozen=True)
class AccuracySection:
    """The card's ``accuracy`` section: the **test** split's figures (what a user should expect), and beside
    them, under ``selection``, the split the search ranked on and ``best.pt`` was picked on (optimistic)."""

    test: FidelitySection
    selection: FidelitySection

    def notes(self, block: str) -> list[str]:
        """The test split's warnings."""
        return self.test.notes(block)

    def to_dict(self) -> JSONDict:
        """The section as card JSON."""
        return {**self.test.to_dict(), "selection": self.selection.to_dict(per_class=False)}


# -- on-host latency -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LatencyOptions:
    """How on-host latency is measured (:func:`trials.latency.measure_onnx`): onnxruntime intra-op threads
    and the timing protocol (warm-up runs, timed runs per session, sessions)."""

    ort_threads: int = 1
    warmup: int = WARMUP
    runs: int = RUNS
    sessions: int = SESSIONS

    def __post_init__(self) -> None:
        if self.ort_threads < 1:
            raise ExportError(f"{self.ort_threads} onnxruntime threads", "use 1 or more onnxruntime threads")
        if self.warmup < 0 or self.runs < 1 or self.sessions < 1:
            raise ExportError(f"timing protocol warmup={self.warmup}, runs={self.runs}, sessions={self.sessions}",
                              "use 0 or more warm-up runs, and 1 or more runs and sessions")


@dataclass(frozen=True)
class LatencySection:
    """The card's ``latency`` section: measured on this host, and predicted per device."""

    fp32: Measurement
    int8: Measurement
    ort_threads: int
    predicted: tuple[Mapping[str, object], ...] = ()

    def to_dict(self) -> JSONDict:
        """The section as card JSON (``measured.threads`` is the onnxruntime thread count)."""
        cpu = self.fp32.cpu or platform.processor() or platform.machine()
        measured = {"fp32": {"ms": float(self.fp32.label_ms), **self.fp32.to_dict()},
                    "int8": {"ms": float(self.int8.label_ms), **self.int8.to_dict()},
                    "threads": self.ort_threads, "cpu": str(cpu)}
        return {"measured": measured, "predicted": [dict(p) for p in self.predicted]}


def measure_latency(fp32: Path, int8: Path, options: LatencyOptions,
                    predicted: Sequence[Mapping[str, object]] = ()) -> LatencySection:
    """Time both files on this host; ``predicted`` (one mapping per device) is recorded beside the figures."""
    protocol = {"threads": options.ort_threads, "warmup": options.warmup, "runs": options.runs,
                "sessions": options.sessions}
    return LatencySection(measure_onnx(fp32, **protocol), measure_onnx(int8, **protocol), options.ort_threads,
                          tuple(predicted))
