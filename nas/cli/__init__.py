"""The ``nas`` command: a thin layer over the library.

Library code raises :class:`search_space.NasError`; here it becomes one red line on stderr and exit
code 1 (usage errors exit 2, Ctrl-C 130). ``--debug`` or ``NAS_DEBUG=1`` shows the traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from rich.markup import escape

from nas import __version__
from nas.cli import arch, data, export, hw, pareto, search, train
from nas.cli._common import library_progress, stderr, warnings_as_lines
from nas.progress import show_library_progress
from search_space.errors import NasError

#: Subcommand modules; each has ``register(subparsers)`` and sets ``func`` on its parsers.
COMMANDS = [arch, hw, data, train, search, pareto, export]

EPILOG = """examples:
  nas arch table                         the seed's model-analysis table (true MACs beside its FLOPs)
  nas arch show A0 --resolution 112      per-layer costs of RepVGG-A0 at 112 px
"""


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (every subcommand registered)."""
    parser = argparse.ArgumentParser(
        prog="nas",
        description="Hardware-aware architecture search over RepVGG.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"nas {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback when something fails")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMANDS:
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI with ``argv`` and return the exit code (no ``sys.exit``: callable from tests)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help exits 0, usage errors 2
        return int(exc.code or 0)
    debug = args.debug or os.environ.get("NAS_DEBUG") == "1"
    try:
        # bars for decoding, header scans, evaluation; warnings as one line each
        with show_library_progress(library_progress), warnings_as_lines():
            return int(args.func(args) or 0)
    except NasError as exc:
        if debug:
            raise
        hint = f" [dim]— {escape(exc.hint)}[/]" if exc.hint else ""
        stderr.print(f"[bold red]error:[/] {escape(exc.message)}{hint}")
        return 1
    except KeyboardInterrupt:
        stderr.print("[yellow]interrupted[/]")
        return 130
    except BrokenPipeError:
        return 0


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
