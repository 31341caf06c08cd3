"""What every subcommand shares: output in table/JSON/CSV, progress only on a terminal, messages to stderr."""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import math
import sys
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

FORMATS = ("table", "json", "csv")

stderr = Console(stderr=True, highlight=False, soft_wrap=True)


def add_format(parser: argparse.ArgumentParser, default: str = "table") -> None:
    """Add ``-f/--format table|json|csv`` to a subcommand."""
    parser.add_argument(
        "-f", "--format", choices=FORMATS, default=default,
        help="table for people, json or csv for tools (data goes to stdout, messages to stderr)",
    )


class _RenamedFlag(argparse.Action):
    """A hidden old spelling of a flag: does what the new flag does, after one deprecation line on stderr."""

    def __init__(self, option_strings: Sequence[str], dest: str, *, new: str, inner: type[argparse.Action],
                 **kwargs: Any) -> None:
        self.new = new
        self.inner = inner(option_strings, dest, **kwargs)
        super().__init__(option_strings, dest, nargs=self.inner.nargs, const=self.inner.const,
                         default=argparse.SUPPRESS, type=self.inner.type, choices=self.inner.choices,
                         help=argparse.SUPPRESS, metavar=self.inner.metavar)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        message(f"[yellow]note:[/] {option_string} is deprecated; use {self.new}")
        self.inner(parser, namespace, values, option_string)


def add_renamed(container: argparse._ActionsContainer, old: str, new: str) -> None:
    """Keep ``old`` working as a hidden alias of the already-added flag ``new`` (same destination and
    behaviour), with a one-line deprecation note when it is used.

    A required ``new`` is satisfied by either spelling: argparse checks required flags one action at a
    time, so the two become a required pair of which exactly one is given.
    """
    target = next((a for a in container._actions if new in a.option_strings), None)
    if target is None:
        raise ValueError(f"add {new} before its old spelling {old}")
    kwargs: dict[str, Any] = {"inner": type(target), "new": new}
    if isinstance(target, (argparse._StoreAction, argparse._AppendAction)):
        kwargs.update(type=target.type, choices=target.choices, metavar=target.metavar, nargs=target.nargs)
    elif type(target) in (argparse._StoreConstAction, argparse._AppendConstAction):
        kwargs["const"] = target.const
    if target.required:
        pair = container.add_mutually_exclusive_group(required=True)
        target.required = False
        pair._group_actions.append(target)
        container = pair
    container.add_argument(old, dest=target.dest, action=_RenamedFlag, **kwargs)


def message(text: str) -> None:
    """A message for the user, on stderr (never mixed into data on stdout)."""
    stderr.print(text)


@contextlib.contextmanager
def warnings_as_lines() -> Iterator[None]:
    """While a command runs, show each Python warning as one line on stderr (``warning: …``), without the
    file name and source line Python prints."""

    def show(text: Warning | str, category: type[Warning], filename: str, lineno: int, file: Any = None,
             line: str | None = None) -> None:
        message(f"[yellow]warning:[/] {escape(' '.join(str(text).split()))}")

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield


def _plain(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if value == 0 or abs(value) >= 0.01:
            return f"{value:,.4f}".rstrip("0").rstrip(".")
        return f"{value:.3g}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    if isinstance(value, (list, tuple)):
        return ",".join(_cell(v) for v in value)
    return str(value)


def emit(
    rows: Sequence[dict[str, Any]],
    fmt: str,
    columns: Sequence[str] | None = None,
    title: str | None = None,
    extra: dict[str, Any] | None = None,
) -> None:
    """Write rows to stdout as a rich table, JSON or CSV.

    ``extra`` (totals, notes) is printed under the table, or becomes ``{"rows": …, **extra}`` in JSON;
    CSV carries the rows only.
    """
    columns = list(columns or (rows[0].keys() if rows else []))
    if fmt == "json":
        body: Any = [{k: _plain(r.get(k)) for k in columns} for r in rows]
        if extra is not None:
            body = {"rows": body, **{k: _plain(v) for k, v in extra.items()}}
        sys.stdout.write(json.dumps(body, indent=2, default=str, ensure_ascii=False) + "\n")
    elif fmt == "csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for r in rows:
            writer.writerow({k: "" if r.get(k) is None else r.get(k) for k in columns})
        sys.stdout.write(buf.getvalue())
    else:
        table = Table(title=title, show_lines=False)
        for c in columns:
            sample = next((r.get(c) for r in rows if r.get(c) is not None), None)
            numeric = isinstance(sample, (int, float)) and not isinstance(sample, bool)
            table.add_column(c, justify="right" if numeric else "left")
        for r in rows:
            table.add_row(*(_cell(r.get(c)) for c in columns))
        console = Console(file=sys.stdout, width=max(160, Console().width), highlight=False)
        console.print(table)
        for k, v in (extra or {}).items():
            console.print(f"{k}: {_cell(v)}")


_live: list[Progress] = []  # the bar display on screen, if any: a bar opened meanwhile joins it as a new line


@contextlib.contextmanager
def progress(description: str, total: int | None, transient: bool = False) -> Iterator[Any]:
    """A rich progress bar on stderr when it is a terminal; otherwise a silent stand-in.

    Yields a callable ``advance(n=1, description=None)``. A bar opened while another is shown (data loaded
    during a search) becomes a second line of the same display; ``transient`` bars vanish when done.
    """
    if not sys.stderr.isatty():
        yield lambda n=1, description=None: None
        return
    with contextlib.ExitStack() as stack:
        if not _live:
            bar = stack.enter_context(Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                TimeElapsedColumn(), TimeRemainingColumn(), console=stderr, transient=transient,
            ))
            _live.append(bar)
            stack.callback(_live.pop)
        bar = _live[0]
        task = bar.add_task(description, total=total)
        if transient:
            stack.callback(bar.remove_task, task)

        def advance(n: int = 1, description: str | None = None) -> None:
            bar.update(task, advance=n, **({"description": description} if description else {}))

        yield advance


def library_progress(description: str, total: int) -> contextlib.AbstractContextManager[Any]:
    """How the ``nas`` command shows the library's long steps (decoding, header scans, evaluation): a
    transient bar on a terminal (see :mod:`nas.progress`)."""
    return progress(description, total, transient=True)
