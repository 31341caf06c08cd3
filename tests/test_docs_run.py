"""The console examples of README.md and docs/*.md run as written and still print what the docs show.

A console example is a fenced block whose lines start with ``$ `` (a command; a line ending in ``\\``
continues on the next) followed by the output the docs show. Each document's examples run in order, in a
fresh temporary folder, through bash, with this venv's ``nas`` first on PATH. A command fails the test
when its exit status differs from the doc's (an output that shows ``error:`` or ``usage error:`` expects a
failure, any other output success) or when its output no longer has the shown shape:

* the header row of every table shown (rich ``┃`` rows, and the CSV header of ``-f csv``) must be printed
  with the same column names, and a table shown with rows must have rows (within a factor of 3 of the
  number shown, unless the doc elides rows with ``…``);
* every ``label: …`` line shown (``card:``, ``hypervolume:``, ``error:``) must start a printed line.

Numbers are never compared. What is not run, and stays visible in the documents:

* a command containing ``…`` (a sketch with a placeholder);
* a block right after ``<!-- docs-run: skip REASON -->`` (GPUs, real data sets, servers, benchmarks);
* ``<!-- docs-run: setup COMMAND -->`` runs COMMAND (not shown to readers) before the next block.

Documents whose examples train a model are marked ``docs_train`` (minutes; ``make test`` runs them after
the default suite); the others run in the default suite. The documents whose examples run whole searches and
exports (``LONG``: tens of minutes together on 2 cores) are marked ``docs_long`` instead, which ``make test``
leaves out and ``make docs-test`` runs with all the others.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
#: Documents whose examples train (a search with an accuracy objective, nas train, nas export, nas eval).
TRAINING = re.compile(r"(^|[;&|]\s*)nas (train|export|eval)\b|nas search (?!.*-o (macs|params|memory))")
FENCE = re.compile(r"^```")
MARKER = re.compile(r"^<!--\s*docs-run:\s*(skip|setup)\b\s*(.*?)\s*-->\s*$")
LABEL = re.compile(r"^([A-Za-z][A-Za-z0-9_ -]{0,30}):(\s|$)")
ERROR = re.compile(r"^(usage )?error:")
TIMEOUT_S = 900
#: Documents that run a search of 20 specs or export several trained models: ``docs_long`` (``make docs-test``).
LONG = {"README.md", "docs/search.md", "docs/export.md"}
#: A whole document's budget (pyproject's 600 s timeout is per test; a training document runs many commands).
DOCUMENT_TIMEOUT_S = 3600


@dataclass
class Example:
    """One ``$`` command of a document, the output shown under it, and where it is."""

    command: str
    shown: list[str]
    line: int


@dataclass
class Document:
    """A document's runnable examples in order, with the setup commands before them and what is skipped."""

    path: Path
    steps: list[tuple[str, Example | str]] = field(default_factory=list)  # ("run", example) or ("setup", cmd)
    skipped: list[str] = field(default_factory=list)

    @property
    def trains(self) -> bool:
        """True when an example trains a model (minutes)."""
        return any(kind == "run" and TRAINING.search(step.command) for kind, step in self.steps)  # type: ignore[union-attr]


def _examples(block: list[str], first_line: int) -> list[Example]:
    examples: list[Example] = []
    i = 0
    while i < len(block):
        if not block[i].startswith("$ "):
            i += 1
            continue
        start, command = i, block[i][2:]
        while command.rstrip().endswith("\\") and i + 1 < len(block):
            i += 1
            command = command.rstrip()[:-1].rstrip() + " " + block[i].strip()
        i += 1
        shown = []
        while i < len(block) and not block[i].startswith("$ "):
            shown.append(block[i])
            i += 1
        examples.append(Example(command.strip(), shown, first_line + start))
    return examples


def parse(path: Path) -> Document:
    """The console examples of one Markdown file (see the module doc)."""
    doc = Document(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    marker: tuple[str, str] | None = None
    i = 0
    while i < len(lines):
        found = MARKER.match(lines[i])
        if found:
            marker = (found.group(1), found.group(2))
            if marker[0] == "setup":
                doc.steps.append(("setup", marker[1]))
                marker = None
            i += 1
            continue
        if not FENCE.match(lines[i]):
            if lines[i].strip():
                marker = None  # a marker belongs to the block right after it
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if FENCE.match(lines[j]))
        examples = _examples(lines[i + 1:end], i + 2)
        for ex in examples:
            where = f"{path.name}:{ex.line}"
            if marker and marker[0] == "skip":
                doc.skipped.append(f"{where} ({marker[1]}): {ex.command}")
            elif "…" in ex.command:
                doc.skipped.append(f"{where} (sketch): {ex.command}")
            else:
                doc.steps.append(("run", ex))
        marker = None
        i = end + 1
    return doc


# -- the shape of an output --------------------------------------------------------------------------------

def _header_rows(lines: list[str]) -> list[list[str]]:
    return [[c.strip() for c in line.strip().strip("┃").split("┃")] for line in lines if line.lstrip().startswith("┃")]


def _tables(lines: list[str]) -> list[tuple[list[str], int, bool]]:
    """``(columns, rows, elided)`` of every rich table in ``lines`` (rows: ``│`` lines up to the next header)."""
    tables: list[tuple[list[str], int, bool]] = []
    for line in lines:
        text = line.strip()
        if text.startswith("┃"):
            tables.append(([c.strip() for c in text.strip("┃").split("┃")], 0, False))
        elif tables and text.startswith("│") and text.strip("│ ") not in ("…", "..."):
            columns, rows, elided = tables[-1]
            tables[-1] = (columns, rows + 1, elided)
        elif tables and text.lstrip("│ ").startswith(("…", "...")):  # rows elided in the doc
            columns, rows, _ = tables[-1]
            tables[-1] = (columns, rows, True)
    return tables


def shape_problems(example: Example, out: str, err: str) -> list[str]:
    """What the printed output lacks of the shown output's shape (empty: it matches)."""
    shown = [line for line in example.shown if line.strip()]
    printed = (out + "\n" + err).splitlines()
    problems = []
    have = {tuple(cols) for cols in _header_rows(printed)}
    printed_tables = _tables(printed)
    for columns, rows, elided in _tables(shown):
        if tuple(columns) not in have:
            problems.append(f"no table with columns {columns}")
            continue
        got = next(r for c, r, _ in printed_tables if c == columns)
        if rows and not got:
            problems.append(f"table {columns[:3]}… has no rows (the doc shows {rows})")
        elif rows and not elided and not rows / 3 <= got <= 3 * rows + 3:
            problems.append(f"table {columns[:3]}… has {got} rows, the doc shows {rows}")
    if " -f csv" in example.command and shown and "," in shown[0] and "|" not in example.command:
        first = out.splitlines()[0] if out.strip() else ""
        if first != shown[0]:
            problems.append(f"CSV header {first!r}, the doc shows {shown[0]!r}")
    if " -f json" in example.command and shown and "|" not in example.command:
        try:
            expected = json.loads("\n".join(shown))
        except ValueError:
            expected = None  # an excerpt
        if isinstance(expected, dict) and not set(expected) <= set(json.loads(out)):
            problems.append(f"JSON keys {sorted(set(expected) - set(json.loads(out)))} missing")
    starts = {m.group(1) for line in printed if (m := LABEL.match(line.strip()))}
    for line in shown:
        label = LABEL.match(line.strip())
        if label and not line.startswith((" ", "│", "┃")) and label.group(1) not in starts:
            problems.append(f"no line starting {label.group(1)!r}: (the doc shows {line.strip()[:80]!r})")
    return problems


# -- running -----------------------------------------------------------------------------------------------

def _env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(OMP_NUM_THREADS="1", COLUMNS="200", NO_COLOR="1", TERM="dumb", HOME=str(home))
    env.pop("NAS_DEBUG", None)
    return env


def run_document(doc: Document, folder: Path) -> list[str]:
    """Run a document's examples in order inside ``folder``; return one line per failed example."""
    env = _env(folder / "home")
    (folder / "home").mkdir(exist_ok=True)
    failures = []
    for _, step in doc.steps:
        command = step if isinstance(step, str) else step.command
        proc = subprocess.run(["bash", "-c", command], cwd=folder, env=env, capture_output=True, text=True,
                              timeout=TIMEOUT_S)
        if isinstance(step, str):
            assert proc.returncode == 0, f"setup `{command}` failed: {proc.stderr[-2000:]}"
            continue
        where = f"{doc.path.name}:{step.line} `{command}`"
        fails = any(ERROR.match(line.strip()) for line in step.shown) and "$?" not in command  # `; echo $?`
        if (proc.returncode != 0) != fails:
            failures.append(f"{where}: exit {proc.returncode} (the doc shows {'a failure' if fails else 'success'})"
                            f"\n    {(proc.stderr or proc.stdout).strip()[-600:]}")
            continue
        failures += [f"{where}: {p}" for p in shape_problems(step, proc.stdout, proc.stderr)]
    return failures


def _param(path: Path) -> object:
    doc, name = parse(path), str(path.relative_to(REPO))
    marks = [pytest.mark.docs, pytest.mark.timeout(DOCUMENT_TIMEOUT_S)]
    if name in LONG:
        marks.append(pytest.mark.docs_long)
    elif doc.trains:
        marks.append(pytest.mark.docs_train)
    return pytest.param(doc, id=name, marks=marks)


@pytest.mark.parametrize("doc", [_param(p) for p in DOCUMENTS])
def test_console_examples_run_as_documented(doc: Document, tmp_path: Path) -> None:
    """Every runnable example of the document exits as shown and prints the shown shape."""
    if not any(kind == "run" for kind, _ in doc.steps):
        pytest.skip(f"no runnable console example ({len(doc.skipped)} skipped)")
    failures = run_document(doc, tmp_path)
    assert not failures, "\n".join(failures)


# -- the checker itself ------------------------------------------------------------------------------------

def test_the_long_documents_exist() -> None:
    """A renamed document must not leave ``LONG`` naming nothing (it would then run in ``make test``)."""
    assert {str(p.relative_to(REPO)) for p in DOCUMENTS} >= LONG


def test_the_parser_joins_continuations_and_honours_markers(tmp_path: Path) -> None:
    md = tmp_path / "x.md"
    md.write_text("text\n\n<!-- docs-run: setup mkdir d -->\n```console\n$ nas arch show N1 \\\n"
                  "      --resolution 32\nout\n$ nas search …\n```\n\n<!-- docs-run: skip needs a GPU -->\n"
                  "```\n$ nas train --device cuda\n```\n```\n$ nas hw list\n```\n", encoding="utf-8")
    doc = parse(md)
    assert [(k, s if isinstance(s, str) else s.command) for k, s in doc.steps] == [
        ("setup", "mkdir d"), ("run", "nas arch show N1 --resolution 32"), ("run", "nas hw list")]
    assert doc.steps[1][1].shown == ["out"]  # type: ignore[union-attr]
    assert [s.split(" (")[1].split(")")[0] for s in doc.skipped] == ["sketch", "needs a GPU"]
    assert not doc.trains


def test_the_shape_check_catches_a_renamed_column_a_lost_table_and_a_missing_label() -> None:
    shown = ["┃ name ┃ macs ┃", "│ A0 │ 1 │", "│ N1 │ 2 │", "card: x.json"]
    example = Example("nas arch table", shown, 1)
    same = "┏━┓\n┃ name ┃ macs ┃\n│ B0 │ 7 │\n│ B1 │ 8 │\n│ B2 │ 9 │\n"
    assert shape_problems(example, same, "card: y.json") == []
    assert shape_problems(example, same.replace("macs", "flops"), "card: y.json") == [
        "no table with columns ['name', 'macs']"]
    assert shape_problems(example, "┃ name ┃ macs ┃\n", "card: y") == [
        "table ['name', 'macs']… has no rows (the doc shows 2)"]
    assert shape_problems(example, same, "") == ["no line starting 'card': (the doc shows 'card: x.json')"]
    csv = Example("nas hw list -f csv", ["device,precision", "T4,int8"], 1)
    assert shape_problems(csv, "device,precision\nT4,int8\n", "") == []
    assert shape_problems(csv, "device,prec\n", "")[0].startswith("CSV header")
