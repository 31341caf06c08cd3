"""Layering: import-linter's contracts hold, and the spec and cost model stay free of torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")


def test_import_linter_contracts_are_kept(repo_root: Path) -> None:
    lint_imports = Path(sys.executable).with_name("lint-imports")
    assert lint_imports.exists(), "install the dev extra: pip install -e '.[dev]'"
    proc = subprocess.run(
        [str(lint_imports), "--no-cache"], cwd=repo_root, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    contracts = tomllib.loads((repo_root / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    assert len(contracts) >= 3
    for contract in contracts:
        assert f"{contract['name']} KEPT" in proc.stdout
    assert "0 broken" in proc.stdout


def test_search_space_imports_without_torch(repo_root: Path) -> None:
    """The spec, presets and cost model are pure Python: a search can score thousands of specs a second."""
    code = (
        "import json, sys, search_space, search_space.io; "
        "print(json.dumps(sorted(m for m in ('torch', 'numpy', 'optuna', 'rich') if m in sys.modules)))"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=repo_root, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == []


def test_no_import_cycle_anywhere(repo_root: Path) -> None:
    """No module reaches itself through imports (late and TYPE_CHECKING imports included): for every direct
    import a → b there is no chain b → … → a. Cycles hide an owner that is in the wrong module."""
    grimp = pytest.importorskip("grimp", reason="grimp comes with import-linter (the dev extra)")
    graph = grimp.build_graph("search_space", "predictors", "trials", "nas", cache_dir=None)
    cycles = []
    for importer in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(importer)):
            back = graph.find_shortest_chain(importer=imported, imported=importer)
            if back:
                cycles.append(" → ".join((importer, *back)))
    assert not cycles, "import cycles:\n" + "\n".join(cycles)
