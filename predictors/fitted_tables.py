"""One cached way to get fitted predictors for a set of hardware tables.

Every command that predicts latency — a search, an export's model card, ``nas hw`` — asks :func:`fitted`
with the table files it was given. The fit is cached per process on each file's (path, mtime, size) stamp,
so the same tables give the *same* :class:`FittedTables` object (the same predictors, the same numbers)
to every caller, and an edited table is read and fitted again.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from predictors.errors import PredictorError
from predictors.families import DEFAULT_FAMILY
from predictors.latency import DevicePredictor, fit_predictors
from predictors.tables import SEED_TABLE, HardwareTable, load_table, resolve_device

#: (absolute path, mtime in ns, size in bytes); the times are None for a file that does not exist.
Stamp = tuple[str, int | None, int | None]


@dataclass(frozen=True)
class FittedTables:
    """The merged hardware table and one fitted predictor per device key that has a measured latency."""

    table: HardwareTable
    predictors: Mapping[str, DevicePredictor]  # read-only
    family: str

    def resolve(self, name: str) -> str:
        """The canonical device key of ``name`` (case-insensitive); unknown → :class:`PredictorError`."""
        return resolve_device(self.table, name)

    def select(self, names: Sequence[str] | None = None) -> dict[str, DevicePredictor]:
        """The predictors of ``names`` (every one for ``None``), keyed by canonical device key."""
        if names is None:
            return dict(self.predictors)
        out = {}
        for name in names:
            key = self.resolve(name)
            if key not in self.predictors:
                raise PredictorError(f"device {key!r} has no measured latency (batch 1)",
                                     "add rows that ran ('ok') for it to a hardware table")
            out[key] = self.predictors[key]
        return out


def stamp(path: str | os.PathLike[str]) -> Stamp:
    """What identifies one version of a table file: its absolute path, modification time and size."""
    absolute = os.path.abspath(path)
    try:
        info = os.stat(absolute)
    except OSError:
        return absolute, None, None
    return absolute, info.st_mtime_ns, info.st_size


def fitted(paths: Sequence[str | os.PathLike[str]] = (), include_seed: bool = True,
           family: str = DEFAULT_FAMILY) -> FittedTables:
    """The tables ``paths`` (after the shipped seed table unless ``include_seed`` is False), read, merged and
    fitted once per process and version of the files; a bad table raises :class:`~predictors.TableError`."""
    files = ([SEED_TABLE] if include_seed else []) + [Path(p) for p in paths]
    return _fitted(tuple(stamp(f) for f in files), tuple(str(f) for f in files), family)


@functools.lru_cache(maxsize=8)
def _fitted(stamps: tuple[Stamp, ...], names: tuple[str, ...], family: str) -> FittedTables:
    """``stamps`` key the cache; ``names`` are the paths as given (error messages name them so)."""
    table = load_table(names, include_seed=False)
    return FittedTables(table, MappingProxyType(fit_predictors(table, family=family)), family)
