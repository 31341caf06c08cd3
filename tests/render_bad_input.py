"""Write ``docs/bad_input.md`` from the cases of ``tests/bad_input_cases.py``, each run as the test runs it.

    .venv/bin/python tests/render_bad_input.py            # every case, slow ones included (a few minutes)
    .venv/bin/python tests/render_bad_input.py --check    # exit 1 when the doc differs from today's output

``tests/test_bad_input.py`` checks each fast case's row against the doc, so the table cannot drift.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bad_input_cases import CASES, Case, Result, Workspace

TABLE_HEAD = "| command | bad input | given | exit | message |\n|---|---|---|---|---|"
DOC = Path(__file__).resolve().parents[1] / "docs" / "bad_input.md"

HEAD = """# Bad input: what each command says

Every row is one kind of bad input, the exact command (run in a folder holding the files the *given* column
names), the exit status, and the line the command printed on stderr. Exit 1: the library refused the input
(one line, `error: problem — what to do`); exit 2: a usage error, where argparse prints the usage synopsis
above the line shown. No row prints a traceback, and none leaves a file or folder behind: a refused command
writes nothing (checked for each row's output paths).

The table is generated: `tests/bad_input_cases.py` holds the cases, `tests/render_bad_input.py` runs them and
writes this file, and `tests/test_bad_input.py` runs them again and fails when a row here differs from what the
command prints now. Rows marked *trains* fail during training (after the progress lines).

Given files: *checkpoint* — `ckpt.pt` (a model-only checkpoint of a tiny spec on the embedded digits),
`half.pt` (its first half), `noise.pt`, `empty.pt`, `foreign.pt` (a torch file of something else), `evil.pt`
(a pickle whose loading would call `os.system`), `run_done/` (a finished run), `run_evil/last.pt`;
*study* — `nas.db` (study `s`, objectives macs and params: trials 0–1 complete, 2 failed, 3 infeasible,
4 running), `empty.db` (one study whose only trial failed), `two.db` (two studies); *images* — `imgs/` (3
classes), `one/` (1 class), `empty_dir/`, `noimg/` (class folders without images), `afile`; *files* — broken
hardware tables (`header.csv`, `negative.csv`, `words.csv`, `unknown_arch.csv`), space files (`bad.toml`,
`unknown.toml`, `badwidth.toml`), `pred/T4.json` (not JSON), `specs.txt` (one bad line).

Killed runs: `kill -9` can leave a checkpoint's temp file (`.last.pt.<random>.tmp`) or a staging folder
(`.train-HOST-PID-<random>/`, `.export-HOST-PID-<random>/`). The next `nas train` or checkpoint write in that folder
removes temp files unchanged for 10 minutes (a live writer renames its temp within seconds); the next `nas export`
into that folder removes staging folders whose process (on this host) no longer runs, and those of other hosts or
older versions once unchanged for a day.

A search that runs but finds every spec infeasible (`nas search --max-macs 1`) is not bad input: it exits 0
and ends with one `warning:` line naming each limit, how many specs it ruled out and the smallest value seen.
"""


def row(case: Case, result: Result, folder: Path) -> str:
    """The table row of one case's run (the work folder's path shown as ``.``)."""
    message = result.message
    for prefix in {str(folder.resolve()), str(folder)}:
        message = message.replace(prefix + "/", "").replace(prefix, ".")
    given = ", ".join([*case.setup, *(["trains"] if case.slow else [])])
    cells = [f"`{case.shell}`", case.kind, given, str(result.code), f"`{message}`"]
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def render(rows: Iterable[tuple[Case, str]]) -> str:
    """The whole document from ``(case, row)`` pairs, one table per command."""
    parts, current = [HEAD], None
    for case, line in rows:
        if case.command != current:
            current = case.command
            parts.append(f"\n## nas {current}\n\n{TABLE_HEAD}")
        parts.append(line)
    count = sum(1 for _ in CASES)
    return "\n".join(parts) + f"\n\n{count} kinds of bad input.\n"


def run_all(cases: Iterable[Case]) -> list[tuple[Case, str]]:
    """Run every case in its own fresh folder; return each with its row."""
    out = []
    with tempfile.TemporaryDirectory(prefix="bad-input-") as tmp:
        space = Workspace(Path(tmp))
        for i, case in enumerate(cases):
            folder = Path(tmp) / f"case{i}"
            out.append((case, row(case, space.run(case, folder), folder)))
    return out


def main() -> int:
    """Write the doc, or with ``--check`` compare it."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args()
    text = render(run_all(CASES))
    if args.check:
        same = DOC.is_file() and DOC.read_text() == text
        print("docs/bad_input.md is up to date" if same else "docs/bad_input.md differs: run tests/render_bad_input.py")
        return 0 if same else 1
    DOC.write_text(text)
    print(f"wrote {DOC} ({len(CASES)} cases)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
