"""Export one trained model for int8 edge hardware, verified, with a model card.

:func:`export_model` re-parameterizes the model, writes ONNX fp32 (static 1×3×R×R, one fused 3×3 conv
per block) and int8 QDQ (calibrated on training images), then proves the files compute what the model
computes: fp32 parity with the PyTorch deploy model on the held-out test images, and int8 fidelity
(top-1 agreement with fp32; top-1, balanced accuracy, worst-class recall and the per-class table of both)
on the **test** split, with the selection split's figures beside them (the split the search ranked on
and the best epoch was picked on: an optimistic figure, labelled as such). It measures on-host latency of both files
and writes ``model_card.json`` last. Every file is made in a staging folder and moved into place only
when all checks pass, so a failed export leaves nothing behind that claims success.

Staging folders are named ``.export-HOST-PID-<random>`` (``.train-…`` for the training ``nas export`` does):
a process killed with ``kill -9`` leaves its folder, and the next export into the same folder removes it
(:func:`remove_stale_staging`) once its owner is gone: a process of this host that no longer runs, or, when
the owner cannot be checked (another host, a name from an older version), a folder unchanged for
:data:`STALE_STAGING_SECONDS`.

The stages and their card sections are in :mod:`trials.export_stages`; the card's fields, its reader
and its schema check in :mod:`trials.model_card` (documented in ``docs/model_card.md``).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from search_space import analyze
from search_space.io import atomic_write
from search_space.model import reparameterize
from trials import export_stages as stages
from trials import int8_stage, onnx_export
from trials.checkpoint import remove_stale_temps
from trials.errors import ExportError
from trials.model_card import CARD_NAME, CARD_SCHEMA_VERSION, ModelCard, sha256_file, validate_card

if TYPE_CHECKING:
    import numpy as np
    from torch import nn
    from torch.utils.data import Dataset

    from search_space import ArchSpec
    from trials.data import DataBundle

FP32_NAME = "model_fp32.onnx"
INT8_NAME = "model_int8.onnx"
TOOL_NAME = "repvgg-hwnas"
#: A staging folder whose owner cannot be checked (another host, an older name), unchanged this long, is stale.
STALE_STAGING_SECONDS = 24 * 3600
#: This host, as staging folder names spell it.
_HOST = re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname()) or "host"
#: ``.export-HOST-PID-<random>`` or ``.train-…``; older versions wrote ``.export-<random>``.
_STAGING_NAME = re.compile(r"^\.(?:train|export)-(?:(?P<host>[A-Za-z0-9._]+)-(?P<pid>\d+)-)?[a-z0-9_]+$")


@dataclass(frozen=True)
class Provenance:
    """What the card says about where the model came from: its training (config and metrics, or ``None``
    when unknown), its source (an arch, a trial, a checkpoint) and notes for the user. (How the data was
    loaded comes from the data bundle itself: its settings, recipe and report.)"""

    training: Mapping[str, object] | None = None
    source: Mapping[str, object] = field(default_factory=lambda: {"kind": "model"})
    notes: Sequence[str] = ()


@dataclass(frozen=True)
class Sections:
    """The checked sections of one export, in card order."""

    graph: stages.GraphSection
    quantization: int8_stage.QuantizationSection
    parity: stages.ParitySection
    accuracy: stages.AccuracySection
    latency: stages.LatencySection

    def to_dict(self) -> stages.JSONDict:
        """The sections under their card keys."""
        return {"onnx": self.graph.to_dict(), "quantization": self.quantization.to_dict(),
                "parity": self.parity.to_dict(), "accuracy": self.accuracy.to_dict(), "latency": self.latency.to_dict()}


def export_model(
    model: nn.Module,
    spec: ArchSpec,
    data: DataBundle,
    out_dir: str | os.PathLike[str],
    *,
    budget: int8_stage.Int8Budget | None = None,
    latency: stages.LatencyOptions | None = None,
    provenance: Provenance | None = None,
    predicted: Sequence[Mapping[str, object]] = (),
    attach: Mapping[str, str | os.PathLike[str]] | None = None,
    opset: int = 17,
    on_step: Callable[[str], None] | None = None,
) -> ModelCard:
    """Export a trained ``model`` of ``spec`` into ``out_dir`` and verify it; return its :class:`ModelCard`.

    Writes ``model_fp32.onnx``, ``model_int8.onnx`` (QDQ, calibrated on ``data.train_eval``: training
    images with the evaluation transform; the first attempt of ``budget``'s ladder whose drop on
    ``data.selection`` is within the budget, else the smallest drop; the card's ``quantization.verdict``
    says which) and ``model_card.json`` (last); ``data.test`` gives the parity and accuracy images,
    ``data.selection`` the figures beside them. Missing the int8 budget is not an error: the files and
    the card are written and ``quantization.within_budget`` is false. ``predicted`` holds the per-device latency
    predictions; ``attach`` maps names like ``"checkpoint"`` to files moved into ``out_dir`` with the export
    and checksummed.
    Raises :class:`ExportError` when a check fails, leaving no new file in ``out_dir``.
    """
    budget, latency = budget or int8_stage.Int8Budget(), latency or stages.LatencyOptions()
    step = on_step or (lambda _text: None)
    if len(data.classes) != spec.num_classes:
        raise ExportError(f"the model has {spec.num_classes} classes but the data has {len(data.classes)}",
                          "export with the data the model was trained on")
    test_x, test_y = _split_images(data.test, "test", spec)
    sel_x, sel_y = _split_images(data.selection, "selection", spec)
    staging = _Staging(Path(out_dir))
    try:
        step("re-parameterizing")
        model = model.cpu().float().eval()
        deploy = reparameterize(model)

        step("exporting fp32 ONNX")
        fp32 = onnx_export.export_onnx(deploy, staging.path(FP32_NAME), spec.resolution, opset=opset)
        graph = stages.inspect_graph(fp32, spec)

        step("checking fp32 parity")
        deploy_logits = stages.run_torch(deploy, test_x)
        fp32_logits = stages.run_onnx(fp32, test_x, latency.ort_threads)
        train_logits = stages.run_torch(model, test_x[: stages.REPARAM_IMAGES])
        parity = stages.check_parity(deploy_logits, fp32_logits, train_logits)
        parity.require()

        step(f"quantizing to int8 within {budget.points:g} points of selection {budget.metric}")
        int8 = staging.path(INT8_NAME)
        sel_fp32 = stages.run_onnx(fp32, sel_x, latency.ort_threads)
        judge = int8_stage.Int8Judge(sel_x, sel_y, sel_fp32, data.classes, budget.metric, latency.ort_threads)
        quantization = int8_stage.quantize_within_budget(fp32, int8, data.train_eval, budget, judge,
                                                         on_attempt=lambda a: step(f"  {a.line()}"))

        step("checking int8 fidelity on the test and selection splits")
        accuracy = stages.AccuracySection(
            stages.check_fidelity("test", test_y, data.classes, pytorch=deploy_logits, fp32=fp32_logits,
                                  int8=stages.run_onnx(int8, test_x, latency.ort_threads)),
            stages.check_fidelity("selection", sel_y, data.classes, pytorch=stages.run_torch(deploy, sel_x),
                                  fp32=sel_fp32, int8=stages.run_onnx(int8, sel_x, latency.ort_threads)))

        step("measuring on-host latency")
        timing = stages.measure_latency(fp32, int8, latency, predicted)

        files = {"fp32": FP32_NAME, "int8": INT8_NAME, **staging.take(attach or {})}
        sections = Sections(graph, quantization, parity, accuracy, timing)
        card = _card(spec, data, sections, staging.describe(files), provenance or Provenance())
        validate_card(card)
        step("writing the model card")
        card_path = staging.commit(list(files.values()), card)
    finally:
        staging.close()
    return ModelCard(card, card_path)


def _split_images(dataset: Dataset, split: str, spec: ArchSpec) -> tuple[np.ndarray, np.ndarray]:
    """All images and labels of one split, checked to be at the spec's resolution."""
    x, y = stages.load_images(dataset, range(len(dataset)), what=f"the {split} split")  # type: ignore[arg-type]
    if x.shape[1:] != (3, spec.resolution, spec.resolution):
        raise ExportError(f"{split} images are {list(x.shape[1:])}, the spec wants "
                          f"[3, {spec.resolution}, {spec.resolution}]", "load the data at the spec's resolution")
    return x, y


def _card(spec: ArchSpec, data: DataBundle, sections: Sections, files: stages.JSONDict,
          provenance: Provenance) -> dict[str, object]:
    """The whole model card (see ``docs/model_card.md``)."""
    cost = analyze(spec)
    settings = getattr(data, "settings", None)
    return {
        "schema_version": CARD_SCHEMA_VERSION,
        "tool": {"name": TOOL_NAME, "version": _tool_version()},
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "spec": spec.to_string(), "spec_hash": spec.hash, "arch": spec.to_dict(), "block": spec.block,
        "classes": list(data.classes),
        "cost": {"macs": cost.macs, "params": cost.params, "peak_memory_kib": cost.peak_memory_kib,
                 "peak_layer": cost.peak_layer, "weight_bytes": cost.weight_bytes},
        "files": files,
        **sections.to_dict(),
        "training": dict(provenance.training) if provenance.training is not None else None,
        "data": {"settings": None if settings is None else settings.to_dict(), "recipe": data.recipe.to_dict(),
                 "report": data.report.to_dict()},
        "source": dict(provenance.source),
        "notes": [*provenance.notes, *sections.quantization.notes(spec.block), *sections.accuracy.notes(spec.block)],
    }


def _tool_version() -> str:
    try:
        return importlib.metadata.version(TOOL_NAME)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


class _Staging:
    """A hidden folder inside ``out`` where files are made; :meth:`commit` moves them in, card last.

    Files keep the mode they were made with: :mod:`search_space.io` gives its temp files the mode a plain
    ``open()`` would (0666 minus the umask), and a rename keeps it.
    """

    def __init__(self, out: Path) -> None:
        try:
            out.mkdir(parents=True, exist_ok=True)
            self.dir = make_staging(out, "export")
        except OSError as exc:
            raise ExportError(f"cannot write to output folder {out}: {exc.strerror or exc}",
                              "give an output folder you can write to") from exc
        self.out = out

    def path(self, name: str) -> Path:
        """Where file ``name`` is made."""
        return self.dir / name

    def take(self, attach: Mapping[str, str | os.PathLike[str]]) -> dict[str, str]:
        """Move each attached file in as ``<name><suffix>``; return name → file name."""
        names = {}
        for name, src in attach.items():
            names[name] = f"{name}{Path(src).suffix}"
            shutil.move(str(src), self.path(names[name]))
        return names

    def describe(self, files: Mapping[str, str]) -> stages.JSONDict:
        """The card's ``files`` section: name → {path, sha256, bytes} of each staged file."""
        return {name: {"path": file, "sha256": sha256_file(self.path(file)), "bytes": self.path(file).stat().st_size}
                for name, file in files.items()}

    def commit(self, names: Sequence[str], card: Mapping[str, object]) -> Path:
        """Move ``names`` into ``out`` (an older card there is removed first), then write the card."""
        card_path = self.out / CARD_NAME
        moved: list[Path] = []
        try:
            card_path.unlink(missing_ok=True)
            for name in names:
                os.replace(self.path(name), self.out / name)
                moved.append(self.out / name)
            with atomic_write(card_path) as handle:
                json.dump(card, handle, indent=2)
                handle.write("\n")
        except BaseException:
            for p in moved:
                p.unlink(missing_ok=True)
            raise
        return card_path

    def close(self) -> None:
        """Remove the staging folder and whatever is left in it."""
        shutil.rmtree(self.dir, ignore_errors=True)


def make_staging(out: Path, kind: str) -> Path:
    """A new hidden folder ``out/.KIND-HOST-PID-<random>`` to build files in (``kind``: ``export`` or
    ``train``); the stale staging folders of killed runs in ``out`` are removed first."""
    remove_stale_staging(out)
    return Path(tempfile.mkdtemp(prefix=f".{kind}-{_HOST}-{os.getpid()}-", dir=out))


def remove_stale_staging(out: Path, max_age: float = STALE_STAGING_SECONDS) -> list[Path]:
    """Remove the staging folders in ``out`` whose owner is gone (see the module notes), and the card's
    orphaned temp files; returns the folders removed."""
    removed: list[Path] = []
    try:
        entries = list(out.iterdir())
    except OSError:
        return removed
    for entry in entries:
        match = _STAGING_NAME.match(entry.name)
        if match is None or not entry.is_dir():
            continue
        try:
            own_host = match["pid"] is not None and match["host"] == _HOST and os.name == "posix"
            stale = (not _running(int(match["pid"])) if own_host
                     else time.time() - entry.stat().st_mtime >= max_age)
        except OSError:
            continue
        if stale:
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    remove_stale_temps(out, [CARD_NAME])
    return removed


def _running(pid: int) -> bool:
    """Whether process ``pid`` of this host runs (POSIX: signal 0 checks without sending anything)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True
