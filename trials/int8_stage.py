"""The int8 stage of an export: quantize, judge on the selection split, climb a ladder until a budget is met.

:func:`quantize_within_budget` tries the attempts of an :class:`Int8Budget` in order (per-tensor, then
per-channel, then more calibration images, then onnxruntime's other calibration methods), judges each int8
file with an :class:`Int8Judge` (the drop from fp32, in points of top-1 or balanced accuracy, on the
**selection** split, never the test split) and keeps the first within the budget, or, when none is, the one
with the smallest drop. It returns the card's ``quantization`` section (:class:`QuantizationSection`), with
every attempt and a one-line verdict; :func:`trials.export.export_model` runs it between the fp32 parity check
and the fidelity check. Fields: ``docs/model_card.md``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnx
import onnxruntime as ort

from trials import onnx_export
from trials.errors import ExportError
from trials.export_stages import JSONDict, load_images, run_onnx, scores

if TYPE_CHECKING:
    from torch.utils.data import Dataset

#: What an int8 budget is measured in: top-1, or balanced accuracy (mean per-class recall).
INT8_METRICS = {"top1": "top-1", "bacc": "balanced accuracy"}
#: Drops are compared with the budget after rounding away float noise (in points).
_BUDGET_EPS = 1e-9


@dataclass(frozen=True)
class QuantizeOptions:
    """How one int8 file is made: per-channel (else per-tensor) weight scales, how many training images,
    sampled with ``seed``, calibrate the activation ranges, and with which method
    (:data:`trials.onnx_export.CALIBRATION_METHODS`)."""

    per_channel: bool = False
    calibration_images: int = 256
    seed: int = 0
    method: str = "minmax"

    def __post_init__(self) -> None:
        if self.calibration_images < 1:
            raise ExportError(f"calibration_images is {self.calibration_images}", "calibrate on at least 1 image")
        if self.method not in onnx_export.CALIBRATION_METHODS:
            raise ExportError(f"unknown calibration method {self.method!r}",
                              f"use one of {', '.join(onnx_export.CALIBRATION_METHODS)}")

    def describe(self) -> str:
        """E.g. ``per-channel, MinMax, 256 calibration images``."""
        scales = "per-channel" if self.per_channel else "per-tensor"
        images = "image" if self.calibration_images == 1 else "images"
        method = onnx_export.CALIBRATION_METHODS[self.method]
        return f"{scales}, {method}, {self.calibration_images} calibration {images}"


@dataclass(frozen=True)
class Int8Budget:
    """The largest int8 drop allowed (``points`` of ``metric`` on the selection split) and how the ladder of
    attempts starts: per-tensor (else per-channel) with ``calibration_images`` images; later rungs
    calibrate on ``more_images`` times as many. ``points=inf`` keeps the first attempt."""

    points: float = 1.0
    metric: str = "top1"
    per_channel_first: bool = False
    calibration_images: int = 256
    more_images: int = 4
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.points >= 0:
            raise ExportError(f"int8 budget {self.points} points", "allow a drop of 0 points or more")
        if self.metric not in INT8_METRICS:
            raise ExportError(f"unknown int8 metric {self.metric!r}", f"use one of {', '.join(INT8_METRICS)}")
        if self.calibration_images < 1 or self.more_images < 1:
            raise ExportError(f"calibration_images {self.calibration_images}, more_images {self.more_images}",
                              "calibrate on at least 1 image")

    def ladder(self, available: int) -> list[QuantizeOptions]:
        """The attempts in order, counts capped at the ``available`` calibration images, repeats dropped:
        per-tensor MinMax, per-channel MinMax, then per-channel with more images: MinMax, Entropy, Percentile."""
        n = min(self.calibration_images, available)
        more = min(n * self.more_images, available)
        steps = [] if self.per_channel_first else [QuantizeOptions(False, n, self.seed)]
        steps.append(QuantizeOptions(True, n, self.seed))
        steps += [QuantizeOptions(True, more, self.seed, method) for method in onnx_export.CALIBRATION_METHODS]
        return list(dict.fromkeys(steps))


@dataclass(frozen=True)
class Int8Judge:
    """Scores a candidate int8 file against the fp32 file on the selection split: ``(drop in points of
    metric, top-1 agreement with fp32)``."""

    images: np.ndarray
    labels: np.ndarray
    fp32_logits: np.ndarray
    classes: Sequence[str]
    metric: str = "top1"
    ort_threads: int = 1

    def value(self, logits: np.ndarray) -> float:
        """The metric of ``logits`` on the split, as a fraction."""
        s = scores(logits, self.labels, self.classes)
        return s.top1 if self.metric == "top1" else s.balanced_acc

    def __call__(self, int8: Path) -> tuple[float, float]:
        """``(drop, agreement)`` of the int8 file ``int8``."""
        logits = run_onnx(int8, self.images, self.ort_threads)
        drop = 100 * (self.value(self.fp32_logits) - self.value(logits))
        return drop, float((logits.argmax(1) == self.fp32_logits.argmax(1)).mean())


@dataclass(frozen=True)
class Int8Attempt:
    """One rung of the ladder: how the file was made, its selection drop and agreement, the seconds it took
    (quantizing and judging), whether it met the budget, and its QDQ node count."""

    options: QuantizeOptions
    drop: float
    agreement: float
    seconds: float
    met: bool
    qdq_nodes: int

    def line(self) -> str:
        """E.g. ``per-tensor, MinMax, 256 calibration images: selection drop 1.50 points, agreement 0.962 (over)``."""
        return (f"{self.options.describe()}: selection drop {self.drop:.2f} points, agreement {self.agreement:.3f} "
                f"({'within budget' if self.met else 'over budget'})")

    def to_dict(self) -> JSONDict:
        """The attempt as card JSON."""
        return {"method": self.options.method, "per_channel": self.options.per_channel,
                "calibration_images": self.options.calibration_images, "selection_drop": self.drop,
                "selection_agreement": self.agreement, "seconds": self.seconds, "met": self.met}


@dataclass(frozen=True)
class QuantizationSection:
    """The card's ``quantization`` section: the budget, every attempt, and the one kept (``chosen``)."""

    budget: Int8Budget
    attempts: tuple[Int8Attempt, ...]
    chosen: int
    reduce_range: bool

    @property
    def kept(self) -> Int8Attempt:
        """The attempt whose file is ``model_int8.onnx``."""
        return self.attempts[self.chosen]

    @property
    def met(self) -> bool:
        """The kept attempt is within the budget."""
        return self.kept.met

    @property
    def verdict(self) -> str:
        """One line for the user: within budget or not, by how much, how."""
        metric, points = INT8_METRICS[self.budget.metric], f"{self.budget.points:g}"
        how = f"{self.kept.options.describe()}; attempt {self.chosen + 1} of {len(self.attempts)}"
        if self.met:
            return (f"int8 within budget: selection {metric} drop {self.kept.drop:.2f} points ≤ {points} "
                    f"({how})")
        return (f"int8 OVER budget: no attempt kept the selection {metric} drop within {points} points; "
                f"kept the smallest, {self.kept.drop:.2f} points ({how})")

    def notes(self, block: str) -> list[str]:
        """The verdict when the budget was missed, with advice."""
        if self.met:
            return []
        advice = "; the qarepvgg block usually quantizes better" if block == "repvgg" else ""
        return [f"{self.verdict}{advice}"]

    def to_dict(self) -> JSONDict:
        """The section as card JSON."""
        kept = self.kept.options
        return {"format": "QDQ", "per_channel": kept.per_channel, "calibration_images": kept.calibration_images,
                "method": kept.method, "calibration_source": "train split, seeded random sample",
                "qdq_nodes": self.kept.qdq_nodes, "reduce_range": self.reduce_range, "onnxruntime": ort.__version__,
                "budget": {"points": self.budget.points, "metric": self.budget.metric, "split": "selection",
                           "per_channel_first": self.budget.per_channel_first},
                "attempts": [a.to_dict() for a in self.attempts], "chosen": self.chosen,
                "within_budget": self.met, "verdict": self.verdict}


def quantize(fp32: Path, int8: Path, calibration_set: Dataset, options: QuantizeOptions) -> int:
    """Write the int8 QDQ form of ``fp32`` to ``int8``, calibrated on a seeded sample of ``calibration_set``;
    return its QuantizeLinear + DequantizeLinear node count."""
    size = len(calibration_set)  # type: ignore[arg-type]
    sample = np.random.default_rng(options.seed).permutation(size)[: options.calibration_images]
    images, _ = load_images(calibration_set, sample, what="the calibration set")
    onnx_export.quantize_int8(fp32, int8, (x[None] for x in images), per_channel=options.per_channel,
                              reduce_range=onnx_export.default_reduce_range(), method=options.method)
    qdq = sum(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in onnx.load(str(int8)).graph.node)
    if qdq == 0:
        raise ExportError("the int8 graph has no QuantizeLinear/DequantizeLinear nodes", "report this with the spec")
    return qdq


def quantize_within_budget(fp32: Path, int8: Path, calibration_set: Dataset, budget: Int8Budget, judge: Int8Judge,
                           on_attempt: Callable[[Int8Attempt], None] | None = None) -> QuantizationSection:
    """Try the budget's ladder in order and keep the first int8 file within it at ``int8`` (when none is,
    the one with the smallest drop, the earliest on a tie); every attempt is in the section."""
    attempts: list[Int8Attempt] = []
    best = 0
    for i, options in enumerate(budget.ladder(len(calibration_set))):  # type: ignore[arg-type]
        path = int8.with_name(f"{int8.stem}.attempt{i}{int8.suffix}")
        start = time.perf_counter()
        qdq = quantize(fp32, path, calibration_set, options)
        drop, agreement = judge(path)
        attempts.append(Int8Attempt(options, drop, agreement, round(time.perf_counter() - start, 3),
                                    drop <= budget.points + _BUDGET_EPS, qdq))
        if on_attempt:
            on_attempt(attempts[-1])
        if attempts[-1].met or drop < attempts[best].drop:
            best = i
        if attempts[-1].met:
            break
    for i in range(len(attempts)):
        path = int8.with_name(f"{int8.stem}.attempt{i}{int8.suffix}")
        if i == best:
            os.replace(path, int8)
        else:
            path.unlink(missing_ok=True)
    return QuantizationSection(budget, tuple(attempts), best, onnx_export.default_reduce_range())
