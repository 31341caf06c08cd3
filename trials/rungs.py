"""Rungs of successive halving: a proxy run stopped after some epochs and continued later from its checkpoint.

A rung is the proxy (:mod:`trials.proxy`) stopped early: :func:`rung_accuracy` trains on the schedule of the
top rung (``config.budget.epochs``: warm-up and cosine span the whole budget) and stops after ``epochs``
epochs. A spec promoted to a higher rung continues from the checkpoint its lower rung left in its folder, so
reaching rung 3 through rung 1 gives the very weights of one uninterrupted run to rung 3 (training resumes
exactly: :mod:`trials.train`), and the top rung equals :func:`trials.proxy.proxy_accuracy`.

A rung folder holds the run's checkpoint (``last.pt``, written atomically after every epoch) and a record
(``rung.json``: the spec, the proxy config and the data settings it belongs to), so that a folder of another
spec, budget or data set is refused instead of continued.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from search_space.io import atomic_write
from search_space.spec import ArchSpec
from trials.checkpoint import Checkpoint
from trials.errors import TrainError
from trials.proxy import ProxyConfig, ProxyResult, proxy_bundle, proxy_recipe, proxy_run

if TYPE_CHECKING:
    from trials.data import DataBundle

#: The checkpoint a rung folder holds (the name :func:`trials.train.train` writes).
CHECKPOINT = "last.pt"
#: What the checkpoint belongs to.
RECORD = "rung.json"


def rung_accuracy(spec: ArchSpec, data: DataBundle | None, config: ProxyConfig, epochs: int,
                  folder: str | Path | None) -> ProxyResult:
    """Train `spec` on the proxy budget `config` (its schedule spans config.budget.epochs, the top rung) up to
    `epochs` epochs and score it on the selection split, like trials.proxy.proxy_accuracy. With `folder`,
    continue from the checkpoint there (written by an earlier call for the same spec, config and seed with fewer
    epochs) and leave the checkpoint at `epochs` there (atomic). A missing checkpoint trains from scratch (same
    result, more compute); one from a different spec/config is a TrainError."""
    config.validate()
    top = config.budget.epochs
    if not 1 <= epochs <= top:
        raise TrainError(f"rung of {epochs} epochs is outside the proxy budget's 1–{top}",
                         "the top rung is the proxy budget's epochs; lower rungs stop early on its schedule")
    bundle = proxy_bundle(spec, data)
    if folder is None:
        return proxy_run(spec, bundle, config, stop_after_epoch=epochs)
    out = Path(folder)
    record = rung_record(spec, bundle, config)
    previous = _previous(out, record, epochs)
    if previous is None:
        out.mkdir(parents=True, exist_ok=True)
        with atomic_write(out / RECORD, "w") as handle:
            json.dump(record, handle, indent=1)
    result = proxy_run(spec, bundle, config, stop_after_epoch=epochs, out_dir=out, resume=previous)
    (out / "best.pt").unlink(missing_ok=True)  # train's best epoch: a rung continues from last.pt only
    return result


def rung_record(spec: ArchSpec, data: DataBundle, config: ProxyConfig) -> dict[str, Any]:
    """What a rung checkpoint belongs to (plain JSON): the spec with the data's classes, the proxy config with
    the recipe it resolves to, the data's settings and classes."""
    settings = getattr(data, "settings", None)
    resolved = ProxyConfig(recipe=proxy_recipe(data, config), budget=config.budget)
    return {"spec": spec.replace(num_classes=len(data.classes)).to_string(), "proxy": resolved.to_dict(),
            "data": None if settings is None else settings.to_dict(), "classes": list(data.classes)}


def _previous(folder: Path, record: dict[str, Any], epochs: int) -> Checkpoint | None:
    """The checkpoint in ``folder`` to continue (None: none there), after checking it belongs to ``record``
    and has not passed ``epochs``."""
    path = folder / CHECKPOINT
    if not path.is_file():
        return None
    try:
        recorded = json.loads((folder / RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise TrainError(f"rung folder {folder} holds a checkpoint without a readable {RECORD}",
                         "use a rung folder of its own for every spec and proxy config") from exc
    differ = [key for key in record if recorded.get(key) != record[key]]
    if differ:
        raise TrainError(f"rung folder {folder} belongs to another run (its {', '.join(differ)} differ)",
                         "use a rung folder of its own for every spec, proxy config and seed")
    previous = Checkpoint.read(path)
    if previous.epoch > epochs:
        raise TrainError(f"rung folder {folder} is already at epoch {previous.epoch}, past the rung of {epochs}",
                         "a rung checkpoint only continues upwards")
    return previous
