"""Hardware latency tables: the one owner of their format — reading, validating, merging, and writing.

Format (one measurement per line; :data:`TABLE_COLUMNS` is what :class:`TableWriter` writes)::

    device,precision,arch,latency_ms,status[,batch,resolution,classes,notes]
    T4,int8,A0,0.683414,ok
    Hexagon698,uint8,M1,,failure
    host-cpu,fp32,repvgg_d1-1-1-1_w0.25-0.25-0.25-0.25_g1_r64_c10,1.92,ok,1,64,10,threads=1

* ``arch`` is a preset name or a spec string. A preset (or a spec string without ``_r``/``_c``) resolves at the
  row's ``resolution`` and ``classes`` cells, defaulting to :data:`DEFAULT_RESOLUTION` (112 px) and
  :data:`DEFAULT_CLASSES` (89) — the setting of the seed's hardware table.
* ``status`` is ``ok`` (``latency_ms`` > 0 required) or ``failure`` (the model did not run; latency ignored).
* ``batch`` defaults to 1; the predictors use batch-1 rows. Other columns (``notes``, …) are kept, not read.
* The same device/precision/architecture/batch twice with a different latency or status is an error; exact
  duplicates merge. Device names compare case-insensitively (the first spelling is kept).

Every error names ``file:line`` and what is wrong (:class:`~predictors.errors.TableError`).
:class:`TableWriter` adds measurements to a table: it validates what is already there, replaces a row of the
same measurement (:func:`row_key`), and rewrites the file atomically after each change.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from predictors.errors import PredictorError, TableError
from search_space import SEED_CLASSES, SEED_RESOLUTION, ArchSpec, parse_arch
from search_space.errors import SpecError
from search_space.io import atomic_write

#: Resolution and class count a preset name resolves at when a row gives none (the seed table's setting).
DEFAULT_RESOLUTION = SEED_RESOLUTION
DEFAULT_CLASSES = SEED_CLASSES
REQUIRED_COLUMNS = ("device", "precision", "arch", "latency_ms", "status")
OPTIONAL_COLUMNS = ("batch", "resolution", "classes", "notes")
#: Every column, in the order :class:`TableWriter` writes them (a file's extra columns follow, kept).
TABLE_COLUMNS = REQUIRED_COLUMNS + OPTIONAL_COLUMNS
STATUSES = ("ok", "failure")
#: The seed's table (7 devices, 6 architectures at 112 px, 89 classes), shipped with the package.
SEED_TABLE = Path(__file__).resolve().parent / "resources" / "seed_latency.csv"


@dataclass(frozen=True)
class TableRow:
    """One validated measurement: where it came from, the resolved spec, and the outcome."""

    device: str
    precision: str
    arch: str  # as written in the file
    spec: ArchSpec
    latency_ms: float | None  # None for failures
    status: str  # "ok" | "failure"
    batch: int = 1
    notes: str = ""
    source: str = ""  # "file:line"

    @property
    def ok(self) -> bool:
        """True when the model ran (the row carries a latency)."""
        return self.status == "ok"

    def identity(self) -> RowKey:
        """What makes two rows the same measurement: see :func:`row_key`."""
        return row_key(self.device, self.precision, self.spec, self.batch)


#: device (lower case), precision, canonical spec string, batch.
RowKey = tuple[str, str, str, int]


def row_key(device: str, precision: str, spec: ArchSpec, batch: int = 1) -> RowKey:
    """What makes two rows the same measurement: the device name (case-insensitive), the precision, the
    architecture in canonical form (a preset and its spec string at the same resolution and classes are one
    architecture) and the batch size."""
    return device.lower(), precision.lower(), spec.to_string(), batch


@dataclass(frozen=True)
class HardwareTable:
    """Validated rows from one or more files; device keys are ``name`` or ``name:precision``."""

    rows: tuple[TableRow, ...]
    sources: tuple[str, ...] = ()
    _keys: dict[tuple[str, str], str] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        precisions: dict[str, list[str]] = {}
        for r in self.rows:
            seen = precisions.setdefault(r.device, [])
            if r.precision not in seen:
                seen.append(r.precision)
        keys = {(d, p): (d if len(ps) == 1 else f"{d}:{p}") for d, ps in precisions.items() for p in ps}
        object.__setattr__(self, "_keys", keys)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def device_keys(self) -> list[str]:
        """Canonical keys in table order: the device name, or ``name:precision`` where it has several."""
        return list(dict.fromkeys(self._keys.values()))

    def key_of(self, row: TableRow) -> str:
        """The device key of ``row``."""
        return self._keys[(row.device, row.precision)]

    def device_precision(self, key: str) -> tuple[str, str]:
        """(device, precision) of a canonical key."""
        for dp, k in self._keys.items():
            if k == key:
                return dp
        raise PredictorError(f"unknown device {key!r}", f"known devices: {', '.join(self.device_keys)}")

    def rows_for(self, key: str, batch: int | None = 1) -> list[TableRow]:
        """Rows of device ``key`` (only batch-``batch`` rows unless ``batch`` is None)."""
        device, precision = self.device_precision(key)
        return [r for r in self.rows if r.device == device and r.precision == precision
                and (batch is None or r.batch == batch)]

    def without(self, row: TableRow) -> HardwareTable:
        """The same table minus one row (for leave-one-out evaluation)."""
        return HardwareTable(tuple(r for r in self.rows if r is not row), self.sources)

    def with_rows(self, rows: Iterable[TableRow]) -> HardwareTable:
        """The same sources with a different set of rows (e.g. a subsample)."""
        return HardwareTable(tuple(rows), self.sources)


def resolve_device(table: HardwareTable, name: str) -> str:
    """The canonical key for ``name`` (case-insensitive; ``T4`` or ``T4:int8``); unknown → :class:`PredictorError`."""
    wanted = name.strip().lower()
    known = table.device_keys
    for key in known:
        if key.lower() == wanted:
            return key
    matches = [k for (d, p), k in table._keys.items() if f"{d}:{p}".lower() == wanted or d.lower() == wanted]
    if len(set(matches)) == 1:
        return matches[0]
    if matches:
        raise PredictorError(f"device {name!r} has several precisions", f"choose one of: {', '.join(matches)}")
    raise PredictorError(f"unknown device {name!r}", f"known devices: {', '.join(known) or '(none)'}")


# -- reading ---------------------------------------------------------------------------------------------


def _int_cell(value: str, what: str, where: str, low: int = 1) -> int | None:
    if not value.strip():
        return None
    try:
        number = int(value.strip())
    except ValueError:
        raise TableError(f"{where}: {what} {value!r} is not an integer") from None
    if number < low:
        raise TableError(f"{where}: {what} {number} must be at least {low}")
    return number


def _latency_cell(value: str, status: str, where: str) -> float | None:
    text = value.strip()
    if not text:
        if status == "ok":
            raise TableError(f"{where}: ok row without latency_ms", "give the latency in ms, or status 'failure'")
        return None
    try:
        latency = float(text)
    except ValueError:
        raise TableError(f"{where}: latency_ms {text!r} is not a number", "write milliseconds, e.g. 0.683") from None
    if not math.isfinite(latency) or latency <= 0:
        raise TableError(f"{where}: latency_ms {text} must be a positive number of milliseconds")
    return latency if status == "ok" else None


def _spec_cell(arch: str, resolution: int | None, classes: int | None, where: str) -> ArchSpec:
    """The row's spec: what the arch text states, else the row's resolution/classes cells, else the defaults."""
    text = arch.strip()
    if not text:
        raise TableError(f"{where}: empty arch", "give a preset name (A0, M1, …) or a spec string")
    try:
        ref = parse_arch(text)
        for name, column, value in (("resolution", "resolution", resolution), ("num_classes", "classes", classes)):
            stated = getattr(ref.spec, name)
            if ref.fixes(name) and value is not None and value != stated:
                raise TableError(f"{where}: arch {text!r} says {column} {stated} but the {column} column says {value}")
        return ref.resolve(default_resolution=resolution or DEFAULT_RESOLUTION,
                           default_classes=classes or DEFAULT_CLASSES)
    except SpecError as exc:
        raise TableError(f"{where}: unknown or invalid arch {text!r}: {exc.message}", exc.hint) from None


def read_table_file(path: str | Path) -> list[TableRow]:
    """Validate one CSV file and return its rows (duplicates inside the file are checked by :func:`merge_rows`)."""
    name = str(path)
    header, rows = _read_csv(Path(path))
    if not header:
        raise TableError(f"{name}:1: empty file", f"expected a header: {','.join(REQUIRED_COLUMNS)}")
    if not rows:
        raise TableError(f"{name}:2: empty file (a header but no rows)", "add at least one measurement")
    return [row for _, row in rows]


def _read_csv(path: Path) -> tuple[list[str], list[tuple[dict[str, str], TableRow]]]:
    """The header and every row as (its cells, its validated form); an empty file has no header and no rows."""
    name = str(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            header = [h.strip() if h else h for h in (reader.fieldnames or [])]
            if not header:
                return [], []
            reader.fieldnames = header
            missing = [c for c in REQUIRED_COLUMNS if c not in header]
            if missing:
                raise TableError(f"{name}:1: missing column {', '.join(repr(m) for m in missing)}",
                                 f"the header needs {','.join(REQUIRED_COLUMNS)}")
            rows = []
            for raw in reader:
                cells = _cells(raw, f"{name}:{reader.line_num}")
                rows.append((cells, _parse_row(cells, f"{name}:{reader.line_num}")))
            return header, rows
    except FileNotFoundError:
        raise TableError(f"{name}: no such file", "check the hardware table's path") from None
    except IsADirectoryError:
        raise TableError(f"{name}: is a folder", "give a CSV file") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise TableError(f"{name}: cannot read: {exc}", "give a UTF-8 CSV file") from None


def _cells(raw: Mapping[str | None, str | list[str] | None], where: str) -> dict[str, str]:
    if raw.get(None):
        raise TableError(f"{where}: more cells than header columns", "quote cells that contain commas")
    return {k: str(v or "").strip() for k, v in raw.items() if k is not None}


def _parse_row(cell: Mapping[str, str], where: str) -> TableRow:
    device, precision = cell["device"], cell["precision"].lower()
    if not device:
        raise TableError(f"{where}: empty device")
    if not precision:
        raise TableError(f"{where}: empty precision", "e.g. int8, uint8, fp16, fp32")
    status = cell["status"].lower()
    if status not in STATUSES:
        raise TableError(f"{where}: unknown status {cell['status']!r}", f"allowed: {', '.join(STATUSES)}")
    latency = _latency_cell(cell["latency_ms"], status, where)
    batch = _int_cell(cell.get("batch", ""), "batch", where) or 1
    resolution = _int_cell(cell.get("resolution", ""), "resolution", where)
    classes = _int_cell(cell.get("classes", ""), "classes", where, low=2)
    spec = _spec_cell(cell["arch"], resolution, classes, where)
    return TableRow(device, precision, cell["arch"], spec, latency, status, batch, cell.get("notes", ""), where)


def merge_rows(rows: Iterable[TableRow]) -> list[TableRow]:
    """Merge exact duplicates; a conflicting duplicate raises :class:`TableError` naming both lines.

    Device names are unified case-insensitively to their first spelling.
    """
    seen: dict[RowKey, TableRow] = {}
    spelling: dict[str, str] = {}
    merged: list[TableRow] = []
    for row in rows:
        name = spelling.setdefault(row.device.lower(), row.device)
        if name != row.device:
            row = replace(row, device=name)
        first = seen.get(row.identity())
        if first is None:
            seen[row.identity()] = row
            merged.append(row)
        elif (first.status, first.latency_ms) != (row.status, row.latency_ms):
            def show(r: TableRow) -> str:
                return f"{r.latency_ms} ms" if r.ok else "failure"

            raise TableError(
                f"{row.source}: conflicting duplicate of {first.source} ({row.device} {row.precision} "
                f"{row.spec.to_string()}: {show(row)} vs {show(first)})",
                "keep one measurement; a different setting (threads, runtime) needs a different device name",
            )
    return merged


def load_table(paths: Sequence[str | Path] = (), include_seed: bool = True) -> HardwareTable:
    """Read, validate and merge hardware tables (the shipped seed table first unless ``include_seed`` is False)."""
    files = ([SEED_TABLE] if include_seed else []) + [Path(p) for p in paths]
    if not files:
        raise TableError("no hardware table given", "give a hardware table, or include the shipped seed table")
    rows: list[TableRow] = []
    for path in files:
        rows.extend(read_table_file(path))
    return HardwareTable(tuple(merge_rows(rows)), tuple(str(p) for p in files))


# -- writing ---------------------------------------------------------------------------------------------


def measured_row(device: str, precision: str, spec: ArchSpec, latency_ms: float, notes: str = "") -> dict[str, str]:
    """The cells of one batch-1 measurement that ran, in canonical form (spec string, resolution, classes)."""
    return {"device": device, "precision": precision, "arch": spec.to_string(),
            "latency_ms": repr(round(latency_ms, 6)), "status": "ok", "batch": "1",
            "resolution": str(spec.resolution), "classes": str(spec.num_classes), "notes": notes}


def check_writable(path: str | Path) -> Path:
    """``path`` if a table can be written there (its folder exists and is writable), else :class:`TableError`."""
    target = Path(path)
    if target.is_dir():
        raise TableError(f"{str(target)!r} is a folder", "give a CSV file name")
    if not target.parent.is_dir():
        raise TableError(f"folder {str(target.parent)!r} does not exist",
                         "create the folder or choose another file for the table")
    if not os.access(target.parent, os.W_OK) or (target.exists() and not os.access(target, os.W_OK)):
        raise TableError(f"{str(target)!r} is not writable", "choose a writable location for the table")
    return target


class TableWriter:
    """A hardware CSV opened to add measurements.

    :meth:`open` validates what is there as :func:`load_table` would (a missing or empty file is an empty
    table), so nothing is added to a table the predictors cannot read. :meth:`put` replaces the row of the
    same measurement (:func:`row_key`) or appends one, and rewrites the whole file atomically: an interrupted
    run keeps every row put so far, and the file is never half-written. Other rows and extra columns are kept.
    """

    def __init__(self, path: Path, columns: Sequence[str], rows: Sequence[tuple[dict[str, str], TableRow]]) -> None:
        self.path = path
        self.columns = list(columns)
        self._rows = list(rows)

    @classmethod
    def open(cls, path: str | Path) -> TableWriter:
        """Check that ``path`` is writable and read (and validate) the rows already in it."""
        target = check_writable(path)
        header, rows = _read_csv(target) if target.exists() else ([], [])
        merge_rows(row for _, row in rows)  # a conflicting duplicate already there is an error now, not later
        return cls(target, list(TABLE_COLUMNS) + [c for c in header if c not in TABLE_COLUMNS], rows)

    @property
    def rows(self) -> list[TableRow]:
        """The validated rows, in file order."""
        return [row for _, row in self._rows]

    def has(self, device: str, precision: str, spec: ArchSpec) -> bool:
        """Whether the table holds the batch-1 measurement of ``spec`` on ``device`` at ``precision``."""
        key = row_key(device, precision, spec)
        return any(row.identity() == key for _, row in self._rows)

    def put(self, cells: Mapping[str, object]) -> TableRow:
        """Add a row (e.g. :func:`measured_row`), replacing one of the same measurement; rewrite the file."""
        text = {c: "" if cells.get(c) is None else str(cells.get(c)) for c in self.columns}
        row = _parse_row(_cells(text, f"{self.path}: new row"), f"{self.path}: new row")
        self._rows = [(c, r) for c, r in self._rows if r.identity() != row.identity()] + [(text, row)]
        with atomic_write(self.path, newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=self.columns, extrasaction="ignore", lineterminator="\n")
            writer.writeheader()
            writer.writerows(c for c, _ in self._rows)
        return row
