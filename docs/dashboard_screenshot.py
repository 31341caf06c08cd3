"""Screenshot optuna-dashboard on a study, headless, for the docs (docs/img/dashboard.png).

    python docs/dashboard_screenshot.py                       # a fresh cost-only study, made here (~1-3 min)
    python docs/dashboard_screenshot.py --storage sqlite:///nas.db --study acc-latency_T4

It starts ``nas dashboard`` on the storage (a free local port), opens the study page in headless Chromium
through Playwright and saves the page, then stops the dashboard. Without ``--storage`` it first runs
``nas search -o latency:T4,memory --classes 10 --max-memory 300`` (no training: seconds per trial) in a
temporary folder, so the study has infeasible trials to show. Needs the ``dashboard`` extra, Playwright
(``pip install playwright``: a docs tool, not a dependency of nas) and a Chromium (``--chromium``; default
the system's ``chromium``, e.g. Debian's ``apt-get install chromium``). It prints how many trials the
dashboard's own API marks infeasible (its ``constraints`` field has a positive value).
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SEARCH = ["search", "-o", "latency:T4,memory", "--classes", "10", "--max-memory", "300", "--trials", "24",
          "--seed", "0", "--study", "dashboard-demo"]
LIMIT_BYTES = 300_000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> object:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def _wait_for(url: str, server: subprocess.Popen, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            sys.exit(f"nas dashboard exited with {server.returncode}")
        try:
            _get(url)
            return
        except OSError:
            time.sleep(0.5)
    sys.exit(f"the dashboard did not answer at {url} within {seconds:.0f} s")


def _study_id(base: str, name: str | None) -> tuple[int, str]:
    studies = _get(f"{base}/api/studies")["study_summaries"]
    chosen = [s for s in studies if name in (None, s["study_name"])]
    if len(chosen) != 1:
        sys.exit(f"choose one study with --study: {', '.join(s['study_name'] for s in studies)}")
    return chosen[0]["study_id"], chosen[0]["study_name"]


def _infeasible(base: str, study_id: int) -> tuple[list[int], str]:
    """The trials the dashboard's own API marks infeasible, and a line that counts them (and its best trials)."""
    detail = _get(f"{base}/api/studies/{study_id}?after=0")

    def flagged(trials: list[dict]) -> list[int]:
        return [t["number"] for t in trials if any(c > 0 for c in t.get("constraints", []))]

    trials, best = detail["trials"], detail["best_trials"]
    return flagged(trials), (f"{len(flagged(trials))} of {len(trials)} trials marked infeasible by the "
                             f"dashboard's API, {len(flagged(best))} of its {len(best)} best trials")


def _shrink(path: Path) -> None:
    """Quantize the PNG to a 256-colour palette when it is over the docs' size limit (Pillow, via matplotlib)."""
    if path.stat().st_size <= LIMIT_BYTES:
        return
    from PIL import Image

    with Image.open(path) as image:
        small = image.convert("RGB").quantize(256)
    small.save(path, optimize=True)


def screenshot(storage: str, study: str | None, out: Path, chromium: str, width: int, height: int) -> None:
    """Serve ``storage`` with ``nas dashboard``, open the study page headless and save it to ``out``; save the
    page of the first infeasible trial (its note) beside it, as ``<out>_trial.png``."""
    from playwright.sync_api import sync_playwright

    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "nas", "dashboard", "--storage", storage, "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_for(f"{base}/api/meta", server)
        study_id, name = _study_id(base, study)
        infeasible, counts = _infeasible(base, study_id)
        trial_out = out.with_name(f"{out.stem}_trial{out.suffix}")
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": width, "height": height}, device_scale_factor=1)
            page.goto(f"{base}/dashboard/studies/{study_id}", wait_until="networkidle")
            page.get_by_text(f"{name} (id={study_id})").wait_for(timeout=120_000)  # the study's data arrived
            page.wait_for_selector(".js-plotly-plot .scatterlayer .point", timeout=120_000)
            page.wait_for_timeout(1500)  # plots finish their transitions
            page.screenshot(path=str(out))
            if infeasible:
                page.goto(f"{base}/dashboard/studies/{study_id}/trials?numbers={infeasible[0]}")
                page.get_by_text(f"Trial {infeasible[0]} (trial_id=").wait_for(timeout=120_000)
                page.wait_for_timeout(1500)
                page.screenshot(path=str(trial_out))
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=10)
    for path in (out, trial_out)[: 1 + bool(infeasible)]:
        _shrink(path)
        print(f"{path}: {path.stat().st_size / 1000:.0f} kB")
    print(f"study {name!r}: {counts}" + (f"; trial page: trial {infeasible[0]}" if infeasible else ""))


def main() -> None:
    """Parse the flags, make a study when none is given, and take the screenshot."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--storage", help="study storage URL (default: a fresh cost-only study made here)")
    p.add_argument("--study", help="study name (default: the storage's only study)")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "img" / "dashboard.png")
    p.add_argument("--chromium", default=shutil.which("chromium") or shutil.which("chromium-browser"),
                   help="the Chromium executable (default: chromium on PATH)")
    p.add_argument("--size", default="1400x1000", help="viewport WIDTHxHEIGHT in pixels")
    args = p.parse_args()
    if not args.chromium:
        sys.exit("no Chromium found: install one (Debian: apt-get install chromium) or give --chromium PATH")
    width, height = (int(v) for v in args.size.lower().split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        storage = args.storage
        if storage is None:
            storage = f"sqlite:///{Path(tmp) / 'nas.db'}"
            subprocess.run([sys.executable, "-m", "nas", *SEARCH, "--storage", storage], check=True, cwd=tmp,
                           stdout=subprocess.DEVNULL)
        screenshot(storage, args.study, args.out, args.chromium, width, height)


if __name__ == "__main__":
    main()
