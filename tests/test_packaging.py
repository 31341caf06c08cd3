"""The wheel installs and works outside the repository: packages, package data and the ``nas`` script.

Builds the wheel from a copy of the working tree, installs it with ``--no-deps`` into a fresh venv, and makes
the dependencies visible through a ``.pth`` line to this venv's site-packages (after the fresh venv's own, and
without processing this venv's ``.pth`` files, so the editable install of the repo is not picked up).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

PACKAGES = ("search_space", "predictors", "trials", "nas")
NOT_SOURCE = (".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis", "runs", "out")


def _run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


def test_wheel_installs_and_runs_outside_the_repo(repo_root: Path, tmp_path: Path) -> None:
    src = tmp_path / "src"
    shutil.copytree(repo_root, src, ignore=shutil.ignore_patterns(*NOT_SOURCE))
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(dist), "."], src)
    (wheel,) = dist.glob("repvgg_hwnas-*.whl")

    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        top = {n.split("/")[0] for n in names}
        entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        assert "nas = nas.cli:run" in zf.read(entry_points).decode()
    assert {t for t in top if not t.endswith(".dist-info")} == set(PACKAGES)  # no tests/, bench/, docs/

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp_path)
    python = venv / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "--no-index",
          str(wheel)], tmp_path)
    fresh_site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                           tmp_path).stdout.strip())
    (fresh_site / "zz_parent_env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "NAS_DEBUG")}
    env["PYTHONNOUSERSITE"] = "1"
    code = f"import json, {', '.join(PACKAGES)}; print(json.dumps({{m: sys.modules[m].__file__ for m in {PACKAGES}}}))"
    files = json.loads(_run([str(python), "-c", "import sys; " + code], cwd, env).stdout)
    for module, file in files.items():
        assert Path(file).resolve().is_relative_to(fresh_site.resolve()), f"{module} imported from {file}"

    # package data declared in pyproject ships (every file the globs match in the source at build time)
    package_data = tomllib.loads((src / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    shipped = 0
    for package, patterns in package_data.items():
        folder = package.replace(".", "/")
        for pattern in patterns:
            for path in (src / folder).glob(pattern):
                installed = fresh_site / folder / path.relative_to(src / folder)
                assert installed.is_file() and installed.read_bytes() == path.read_bytes(), installed
                shipped += 1
    assert shipped >= 2, "the bundled tables (seed latency, seed class counts) must ship in the wheel"

    proc = _run([str(venv / "bin" / "nas"), "--help"], cwd, env)
    assert proc.stdout.startswith("usage: nas") and "arch" in proc.stdout
