"""The model card of an export: its documented fields, a schema check, and a small reader.

``model_card.json`` is written by :func:`trials.export.export_model`; ``docs/model_card.md`` documents
every field of :data:`CARD_FIELDS`, and :func:`validate_card` checks a card against them (required
fields present with the right JSON types, ``spec`` consistent with ``arch``).

Schema 3 adds the int8 budget to the ``quantization`` section: the budget, every attempt of the ladder
(method, per-channel, calibration size, selection drop, agreement, time), the one kept and a verdict.
Schema 2 reports the **test** split (top-1, balanced accuracy, worst-class recall, per-class table) with
the selection split's figures beside them; schema-1 and schema-2 cards still load and validate against
:data:`CARD_FIELDS_V1` and :data:`CARD_FIELDS_V2`.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from search_space import ArchSpec
from trials.errors import ExportError

__all__ = ["CARD_FIELDS", "CARD_FIELDS_V1", "CARD_FIELDS_V2", "CARD_NAME", "CARD_SCHEMA_VERSION", "ModelCard",
           "load_card", "sha256_file", "validate_card"]

CARD_SCHEMA_VERSION = 3
CARD_NAME = "model_card.json"

_N = (type(None),)
_NUM = (int, float)
#: The fields of schema 1: dotted path → (allowed JSON types, meaning).
CARD_FIELDS_V1: dict[str, tuple[tuple[type, ...], str]] = {
    "schema_version": ((int,), "card format version"),
    "tool.name": ((str,), "the tool that wrote the card"),
    "tool.version": ((str,), "its version"),
    "created": ((str,), "UTC time the card was written, ISO 8601"),
    "spec": ((str,), "canonical architecture spec string"),
    "spec_hash": ((str,), "12-hex-digit hash of the spec string"),
    "arch": ((dict,), "the spec as a dict (depths, widths, block, groups, resolution, num_classes)"),
    "block": ((str,), "repvgg, qarepvgg or repopt"),
    "classes": ((list,), "class names in logit order"),
    "cost.macs": ((int,), "multiply-accumulates of one image, deploy form"),
    "cost.params": ((int,), "deploy-form parameters"),
    "cost.peak_memory_kib": (_NUM, "peak on-chip memory of one layer in KiB (int8 weights, int32+int8 activations)"),
    "cost.peak_layer": ((str,), "the layer at that peak"),
    "files": ((dict,), "name → {path (relative to the card), sha256, bytes}; fp32 and int8 always present"),
    "files.fp32.sha256": ((str,), "sha256 of the fp32 ONNX file"),
    "files.int8.sha256": ((str,), "sha256 of the int8 ONNX file"),
    "onnx.opset": ((int,), "ONNX opset of both files"),
    "onnx.input_name": ((str,), "name of the single input"),
    "onnx.input_shape": ((list,), "static input shape [1, 3, R, R] (NCHW, float32, normalized)"),
    "onnx.conv_nodes": ((int,), "Conv nodes of the fp32 graph (one per block: fused)"),
    "onnx.preprocessing.mean": ((list,), "per-channel RGB mean, on the 0..1 scale, subtracted from the input"),
    "onnx.preprocessing.std": ((list,), "per-channel RGB std the result is divided by"),
    "onnx.preprocessing.crop": ((int,), "input side R: the central crop of a store_size square"),
    "quantization.format": ((str,), "QDQ (QuantizeLinear/DequantizeLinear pairs, onnxruntime static)"),
    "quantization.per_channel": ((bool,), "per-channel weight scales (else per-tensor)"),
    "quantization.calibration_images": ((int,), "training images used to calibrate activation ranges"),
    "quantization.qdq_nodes": ((int,), "QuantizeLinear + DequantizeLinear nodes of the int8 graph"),
    "parity.images": ((int,), "validation images compared"),
    "parity.max_abs_diff": (_NUM, "max absolute difference, fp32 ONNX vs PyTorch deploy logits"),
    "parity.logit_scale": (_NUM, "max absolute PyTorch deploy logit over those images"),
    "parity.tolerance": (_NUM, "allowed max_abs_diff: rtol × max(1, logit_scale)"),
    "parity.rtol": (_NUM, "relative tolerance (1e-3)"),
    "parity.reparam_max_abs_diff": (_NUM, "max absolute difference, train-form vs deploy-form PyTorch logits"),
    "parity.passed": ((bool,), "true: both differences within tolerance (a card is only written when true)"),
    "accuracy.val_images": ((int,), "validation images evaluated"),
    "accuracy.pytorch.top1": (_NUM, "top-1 of the PyTorch deploy model"),
    "accuracy.pytorch.balanced_acc": (_NUM, "mean per-class recall of the PyTorch deploy model"),
    "accuracy.fp32.top1": (_NUM, "top-1 of the fp32 ONNX file (onnxruntime)"),
    "accuracy.fp32.balanced_acc": (_NUM, "its mean per-class recall"),
    "accuracy.int8.top1": (_NUM, "top-1 of the int8 ONNX file (onnxruntime)"),
    "accuracy.int8.balanced_acc": (_NUM, "its mean per-class recall"),
    "accuracy.int8_agreement": (_NUM, "fraction of images where int8 and fp32 ONNX predict the same class"),
    "accuracy.int8_drop": (_NUM, "fp32 top-1 − int8 top-1 (points of fraction, 0.01 = 1 %)"),
    "latency.measured.fp32.ms": (_NUM, "robust on-host latency of the fp32 file, batch 1"),
    "latency.measured.int8.ms": (_NUM, "the same for the int8 file"),
    "latency.measured.threads": ((int,), "onnxruntime intra-op threads"),
    "latency.measured.cpu": ((str,), "host CPU"),
    "latency.predicted": ((list,), "per device: {device, precision, ms, low, high, feasible, reason}"),
    "training": ((dict, *_N), "training config and final metrics (null when unknown)"),
    "data": ((dict,), "data source, resolution, split sizes"),
    "source": ((dict,), "where the model came from: kind arch, trial or checkpoint, and its details"),
    "notes": ((list,), "warnings for the user (e.g. a large int8 drop)"),
}


_TEST_FORMS = {"pytorch": "the PyTorch deploy model", "fp32": "the fp32 ONNX file (onnxruntime)",
               "int8": "the int8 ONNX file (onnxruntime)"}
#: Schema 2: schema 1 with the accuracy on the test split, worst-class recall, the per-class table, the
#: selection split's figures beside them, and the data's settings and recipe.
CARD_FIELDS_V2: dict[str, tuple[tuple[type, ...], str]] = {
    **{k: v for k, v in CARD_FIELDS_V1.items() if k not in ("accuracy.val_images", "parity.images", "data")},
    "schema_version": ((int,), "card format version 2"),
    "parity.images": ((int,), "test images compared"),
    **{f"accuracy.{form}.top1": (_NUM, f"test top-1 of {what}") for form, what in _TEST_FORMS.items()},
    **{f"accuracy.{form}.balanced_acc": (_NUM, f"test balanced accuracy (mean per-class recall) of {what}")
       for form, what in _TEST_FORMS.items()},
    "accuracy.int8_agreement": (_NUM, "fraction of test images where int8 and fp32 ONNX predict the same class"),
    "accuracy.int8_drop": (_NUM, "test fp32 top-1 − int8 top-1 (points of fraction, 0.01 = 1 %)"),
    "accuracy.split": ((str,), "the split these figures are measured on: test (held out from search and training)"),
    "accuracy.images": ((int,), "test images evaluated"),
    **{f"accuracy.{form}.worst_class_recall": (_NUM, f"lowest per-class recall of {what}")
       for form, what in _TEST_FORMS.items()},
    **{f"accuracy.{form}.worst_class": ((str,), "the class with that recall") for form in _TEST_FORMS},
    "accuracy.per_class": ((list,), "per test class: {class, name, images, fp32_correct, fp32_recall, int8_correct, "
                                    "int8_recall}, ascending by fp32 recall"),
    "accuracy.selection.images": ((int,), "selection images evaluated (the split the search ranked on)"),
    **{f"accuracy.selection.{form}.{key}": (_NUM, f"{key} of {form} on the selection split (optimistic)")
       for form in ("fp32", "int8") for key in ("top1", "balanced_acc", "worst_class_recall")},
    "accuracy.selection.int8_drop": (_NUM, "fp32 top-1 − int8 top-1 on the selection split"),
    "data": ((dict,), "how the data was loaded and what it held"),
    "data.settings": ((dict, *_N), "data source and split rule (path, selection_ratio, test_ratio, seed, "
                                   "max_per_class); null when unknown"),
    "data.recipe": ((dict,), "the training recipe (augmentation, loss, sampler, smoothing, long tail)"),
    "data.report": ((dict,), "the loader's report: layout, split sizes, skipped files, …"),
}
_SECTIONS = list(dict.fromkeys(k.split(".")[0] for k in CARD_FIELDS_V1))
_ACCURACY = ("accuracy.split", "accuracy.images", "accuracy.pytorch", "accuracy.fp32", "accuracy.int8.",
             "accuracy.int8_", "accuracy.per_class", "accuracy.selection")
CARD_FIELDS_V2 = dict(sorted(CARD_FIELDS_V2.items(), key=lambda kv: (  # card order: by section, accuracy by topic
    _SECTIONS.index(kv[0].split(".")[0]), next((i for i, p in enumerate(_ACCURACY) if kv[0].startswith(p)), 0))))
_INT8_FIELDS: dict[str, tuple[tuple[type, ...], str]] = {
    "quantization.method": ((str,), "activation calibration of the kept int8 file: minmax, entropy or percentile"),
    "quantization.budget.points": (_NUM, "largest allowed int8 drop, in points (1.0 = one percentage point)"),
    "quantization.budget.metric": ((str,), "what the drop is measured in: top1 or bacc (balanced accuracy)"),
    "quantization.budget.split": ((str,), "the split the drop is judged on: selection (never the test split)"),
    "quantization.budget.per_channel_first": ((bool,), "the ladder started at per-channel (skipped per-tensor)"),
    "quantization.attempts": ((list,), "every attempt in order: {method, per_channel, calibration_images, "
                                       "selection_drop (points), selection_agreement, seconds, met}"),
    "quantization.chosen": ((int,), "index in attempts of the kept file: the first that met the budget, else "
                                    "the smallest drop"),
    "quantization.within_budget": ((bool,), "the kept file meets the budget (false: nas export exits 3)"),
    "quantization.verdict": ((str,), "one line saying so, as nas export prints it"),
}
#: Schema 3 (documented in ``docs/model_card.md``): schema 2 with the int8 budget, its attempts and verdict.
CARD_FIELDS: dict[str, tuple[tuple[type, ...], str]] = {}
for _key, _value in CARD_FIELDS_V2.items():
    CARD_FIELDS[_key] = _value
    if _key == "quantization.qdq_nodes":
        CARD_FIELDS.update(_INT8_FIELDS)
CARD_FIELDS["schema_version"] = ((int,), "card format version (3; cards of versions 1 and 2 are still read)")
FIELDS_BY_VERSION = {1: CARD_FIELDS_V1, 2: CARD_FIELDS_V2, CARD_SCHEMA_VERSION: CARD_FIELDS}


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _lookup(data: Mapping[str, Any], dotted: str) -> tuple[bool, Any]:
    node: Any = data
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False, None
        node = node[part]
    return True, node


def validate_card(data: Mapping[str, Any]) -> None:
    """Check a card dict against the fields of its schema version (:data:`FIELDS_BY_VERSION`); raise
    :class:`ExportError` listing every problem."""
    version = data.get("schema_version")
    if isinstance(version, bool) or version not in FIELDS_BY_VERSION:
        raise ExportError(f"invalid model card: schema_version {version!r} is not one of "
                          f"{', '.join(map(str, FIELDS_BY_VERSION))}", "see docs/model_card.md for the fields")
    problems = []
    for dotted, (types, _) in FIELDS_BY_VERSION[version].items():
        found, value = _lookup(data, dotted)
        if not found:
            problems.append(f"missing {dotted}")
        elif isinstance(value, bool) and bool not in types:
            problems.append(f"{dotted} is a bool")
        elif not isinstance(value, types):
            problems.append(f"{dotted} is {type(value).__name__}, expected {'|'.join(t.__name__ for t in types)}")
    if not problems and data["spec"] != ArchSpec.from_dict(data["arch"]).to_string():
        problems.append("spec and arch disagree")
    if problems:
        raise ExportError(f"invalid model card: {'; '.join(problems)}", "see docs/model_card.md for the fields")


@dataclass(frozen=True)
class ModelCard:
    """What an export produced and proved; :meth:`to_dict` is the JSON written as ``model_card.json``."""

    data: dict[str, Any]
    path: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        """The card as plain JSON data (a deep copy)."""
        return json.loads(json.dumps(self.data))

    @property
    def spec(self) -> ArchSpec:
        """The exported architecture."""
        return ArchSpec.from_dict(self.data["arch"])

    @property
    def folder(self) -> Path | None:
        """Folder holding the card and its files."""
        return self.path.parent if self.path else None

    def file(self, name: str) -> Path:
        """Absolute path of a listed file (``fp32``, ``int8``, ``checkpoint``)."""
        if self.folder is None or name not in self.data["files"]:
            raise ExportError(f"the card lists no file {name!r}", f"listed: {', '.join(self.data['files'])}")
        return self.folder / self.data["files"][name]["path"]

    def summary(self) -> dict[str, Any]:
        """One flat row for tables: test and selection accuracies, drop, agreement, parity, latencies, files.

        A schema-1 card measured one split, the one the search also ranked on: its figures fill the
        ``selection_*`` columns and the ``test_*`` ones are None.
        """
        acc, lat = self.data["accuracy"], self.data["latency"]["measured"]
        if self.data["schema_version"] == 1:
            test: dict[str, Any] = {"fp32": {}, "int8": {}}
            selection = acc
        else:
            test, selection = acc, acc["selection"]
        return {
            "spec": self.data["spec"], "block": self.data["block"], "macs": self.data["cost"]["macs"],
            "params": self.data["cost"]["params"], "test_images": acc.get("images"),
            "test_fp32_top1": test["fp32"].get("top1"), "test_int8_top1": test["int8"].get("top1"),
            "test_int8_drop": test.get("int8_drop"), "test_fp32_bal": test["fp32"].get("balanced_acc"),
            "test_int8_bal": test["int8"].get("balanced_acc"),
            "test_worst_recall": test["fp32"].get("worst_class_recall"),
            "selection_fp32_top1": selection["fp32"]["top1"], "selection_fp32_bal": selection["fp32"]["balanced_acc"],
            "agreement": test.get("int8_agreement"),
            "int8_within_budget": self.data["quantization"].get("within_budget"),
            "parity_max_diff": self.data["parity"]["max_abs_diff"],
            "fp32_ms": lat["fp32"]["ms"], "int8_ms": lat["int8"]["ms"],
            "folder": str(self.folder) if self.folder else None,
        }


def load_card(path: str | os.PathLike[str]) -> ModelCard:
    """Read and validate a ``model_card.json`` (or the folder holding one)."""
    path = Path(path)
    if path.is_dir():
        path = path / CARD_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ExportError(f"cannot read model card {path}: {exc}", "give the folder an export wrote") from exc
    validate_card(data)
    return ModelCard(data, path)
