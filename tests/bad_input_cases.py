"""The bad-input table as data: every kind of bad input the ``nas`` command refuses, one :class:`Case` each.

A case is the command line (paths relative to a fresh work folder), the files placed there first (named
:data:`SETUPS`: a checkpoint, a pickle that would run code, a study, image folders, broken tables …), the
paths that must not exist afterwards (nothing half-written), a word the message must name, and its exit
status. ``tests/test_bad_input.py`` runs every case in-process and checks the house format;
``tests/render_bad_input.py`` runs them the same way and writes ``docs/bad_input.md``, so the table shows
what the commands really print, and a test keeps the two equal.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

TINY = "repvgg_d1-1-1-1_w0.25-0.25-0.25-0.25_g1_r32"
DB = "sqlite:///nas.db"


@dataclass(frozen=True)
class Case:
    """One kind of bad input: ``argv`` after ``nas``, run in a work folder prepared by ``setup``."""

    command: str                 # the doc's section: "arch", "search", …
    kind: str                    # what is wrong, for people
    argv: tuple[str, ...]
    expect: str                  # a word the error line must contain (the bad value or the concept)
    setup: tuple[str, ...] = ()  # names in SETUPS
    absent: tuple[str, ...] = ()  # paths that must not exist afterwards
    code: int = 1                # 1: refused by the library; 2: a usage error (argparse)
    steps: int | None = 0        # progress lines printed before the error (None: any, for a run that trains)
    slow: bool = False           # trains before it fails

    @property
    def shell(self) -> str:
        """The command as typed in a shell."""
        return " ".join(["nas", *(_quote(a) for a in self.argv)])


@dataclass(frozen=True)
class Result:
    """What one run printed and returned."""

    code: int
    out: str
    err: str

    @property
    def message(self) -> str:
        """The line that says what is wrong: the last line on stderr."""
        lines = self.err.strip().splitlines()
        return lines[-1] if lines else ""


def _quote(arg: str) -> str:
    return f"'{arg}'" if any(c in arg for c in " ;*?<>|&$\"") or not arg else arg


# -- the files a case starts from ------------------------------------------------------------------------

class _Evil:
    """A pickle that would run ``os.system`` when loaded without ``weights_only``."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, ("echo this should never run",)


def _checkpoint(folder: Path) -> None:
    """``ckpt.pt``: a model-only checkpoint of the tiny spec on the embedded digits, and damaged copies."""
    import torch

    from search_space import ArchSpec
    from search_space.model import build_model
    from trials.checkpoint import Checkpoint
    from trials.config import TrainConfig
    from trials.data import DataSettings

    spec = ArchSpec.parse(f"{TINY}_c10")
    Checkpoint(spec, TrainConfig(), [str(i) for i in range(10)], build_model(spec).state_dict(),
               data=DataSettings()).write(folder / "ckpt.pt")
    raw = (folder / "ckpt.pt").read_bytes()
    (folder / "half.pt").write_bytes(raw[: len(raw) // 2])
    (folder / "noise.pt").write_bytes(bytes(range(256)) * 8)
    (folder / "empty.pt").write_bytes(b"")
    torch.save({"weights": torch.zeros(2)}, folder / "foreign.pt")
    torch.save({"model": _Evil()}, folder / "evil.pt")
    (folder / "run_evil").mkdir()
    shutil.copy(folder / "evil.pt", folder / "run_evil" / "last.pt")
    (folder / "run_done").mkdir()
    shutil.copy(folder / "ckpt.pt", folder / "run_done" / "last.pt")


def _study(folder: Path) -> None:
    """``nas.db``: study ``s`` (macs, params) with trials 0-1 complete and feasible, 2 failed, 3 infeasible,
    4 running; ``empty.db``: study ``e`` whose only trials failed; ``two.db``: studies ``a`` and ``b``."""
    import optuna
    from optuna.distributions import FloatDistribution
    from optuna.trial import TrialState, create_trial

    from nas.cli import main

    with _quiet():
        main(["search", "-o", "macs,params", "--classes", "10", "--trials", "2", "--sampler", "random",
              "--seed", "0", "--storage", DB, "--study", "s", "-f", "csv"])
    study = optuna.load_study(study_name="s", storage=DB)
    first = study.trials[0]
    attrs = dict(first.user_attrs)
    study.add_trial(create_trial(state=TrialState.FAIL, params=first.params, distributions=first.distributions,
                                 user_attrs={**attrs, "fail_reason": "out of memory (CUDA out of memory)"}))
    study.add_trial(create_trial(state=TrialState.COMPLETE, values=first.values, params=first.params,
                                 distributions=first.distributions, system_attrs={"constraints:macs<=1e+06": 1.5},
                                 user_attrs={**attrs, "feasible": False, "infeasible_reason": "macs 2.5e+06 > 1e+06"}))
    study.add_trial(create_trial(state=TrialState.RUNNING, params=first.params, distributions=first.distributions,
                                 user_attrs=attrs))
    fail = create_trial(state=TrialState.FAIL, params={"x": 0.5}, distributions={"x": FloatDistribution(0, 1)},
                        user_attrs={"fail_reason": "interrupted"})
    empty = optuna.create_study(study_name="e", storage="sqlite:///empty.db", directions=["minimize", "minimize"])
    empty.add_trial(fail)
    for name in ("a", "b"):
        optuna.create_study(study_name=name, storage="sqlite:///two.db")


def _images(folder: Path) -> None:
    """``imgs/``: 3 classes of 12 small PNGs; ``one/``: one class; ``empty_dir/``; ``noimg/``: a class folder
    holding only a text file; ``afile``: a plain file where a folder is expected."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in range(3):
        (folder / "imgs" / f"c{c}").mkdir(parents=True)
        for i in range(12):
            pixels = rng.integers(0, 255, (36, 36, 3)).astype(np.uint8)
            Image.fromarray(pixels).save(folder / "imgs" / f"c{c}" / f"{i}.png")
    (folder / "one" / "c0").mkdir(parents=True)
    for i in range(6):
        shutil.copy(folder / "imgs" / "c0" / f"{i}.png", folder / "one" / "c0" / f"{i}.png")
    (folder / "empty_dir").mkdir()
    (folder / "noimg" / "c0").mkdir(parents=True)
    (folder / "noimg" / "c0" / "notes.txt").write_text("not an image\n")
    (folder / "noimg" / "c1").mkdir()
    (folder / "noimg" / "c1" / "notes.txt").write_text("not an image\n")
    (folder / "afile").write_text("a file, not a folder\n")


def _files(folder: Path) -> None:
    """Broken hardware tables, search-space files and predictor files."""
    header = "device,precision,arch,latency_ms,status\n"
    (folder / "header.csv").write_text("device;arch;ms\nT4;A0;1.0\n")
    (folder / "negative.csv").write_text(header + "T4,fp16,A0,-1.0,ok\n")
    (folder / "words.csv").write_text(header + "T4,fp16,A0,fast,ok\n")
    (folder / "unknown_arch.csv").write_text(header + "T4,fp16,Q7,1.0,ok\n")
    (folder / "bad.toml").write_text("depths = [[1, 2\n")
    (folder / "unknown.toml").write_text("colours = [1, 2]\n")
    (folder / "badwidth.toml").write_text("widths = [[0.0], [1.0], [1.0], [1.0]]\n")
    (folder / "pred").mkdir()
    (folder / "pred" / "T4.json").write_text("{not json")
    (folder / "specs.txt").write_text("A0\nnot_a_spec\n")
    (folder / "afile").write_text("a file, not a folder\n")


SETUPS: dict[str, Callable[[Path], None]] = {
    "checkpoint": _checkpoint, "study": _study, "images": _images, "files": _files,
}


# -- running a case ----------------------------------------------------------------------------------------

@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        yield


class Workspace:
    """Builds each setup once (in a template folder) and copies it into each case's fresh work folder."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._templates: dict[str, Path] = {}

    def prepare(self, case: Case, folder: Path) -> None:
        """Fill ``folder`` with the case's setup files."""
        folder.mkdir(parents=True, exist_ok=True)
        for name in case.setup:
            if name not in self._templates:
                template = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self.root))
                with contextlib.chdir(template), _quiet():
                    SETUPS[name](template)
                self._templates[name] = template
            shutil.copytree(self._templates[name], folder, dirs_exist_ok=True)

    def run(self, case: Case, folder: Path) -> Result:
        """Prepare ``folder`` and run the case in it (in-process, like a shell in that folder)."""
        from nas.cli import main

        self.prepare(case, folder)
        out, err = io.StringIO(), io.StringIO()
        env = os.environ.pop("NAS_DEBUG", None)
        try:
            with contextlib.chdir(folder), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = main(list(case.argv))
        finally:
            if env is not None:
                os.environ["NAS_DEBUG"] = env
        return Result(code, out.getvalue(), err.getvalue())


# -- the cases -----------------------------------------------------------------------------------------------

def _c(command: str, kind: str, argv: str, expect: str, **kwargs: object) -> Case:
    return Case(command, kind, tuple(argv.split()), expect, **kwargs)  # type: ignore[arg-type]


CK, ST, IM, FI = ("checkpoint",), ("study",), ("images",), ("files",)
T = f"--arch {TINY} --out run"  # a tiny training run into run/ (the embedded digits)
X = "--out exp"

CASES: list[Case] = [
    # nas arch
    _c("arch", "unknown preset", "arch show Z9", "Z9"),
    _c("arch", "malformed spec string", "arch show repvgg_d1-1_w1", "depths"),
    _c("arch", "depth 0 in a spec", "arch show repvgg_d0-1-1-1_w1-1-1-1", "depth"),
    _c("arch", "width multiplier 0", "arch show repvgg_d1-1-1-1_w0-1-1-1", "width"),
    _c("arch", "unknown block in a spec", "arch show foo_d1-1-1-1_w1-1-1-1", "foo"),
    _c("arch", "unsupported group count", "arch show repvgg_d1-1-1-1_w1-1-1-1_g3", "groups"),
    _c("arch", "non-numeric spec field", "arch show repvgg_dx-1-1-1_w1-1-1-1", "non-numeric"),
    _c("arch", "repeated spec field", "arch show repvgg_d1-1-1-1_w1-1-1-1_d2-2-2-2", "repeated"),
    _c("arch", "resolution below 32 px", "arch show A0 --resolution 16", "16"),
    _c("arch", "resolution absurdly large", "arch show A0 --resolution 100000", "100000"),
    _c("arch", "one class", "arch show A0 --classes 1", "class"),
    _c("arch", "non-numeric resolution", "arch show A0 --resolution big", "big", code=2),
    _c("arch", "unknown memory strategy", "arch show A0 --memory int4", "int4", code=2),
    _c("arch", "unknown name in a table", "arch table A0 Q7", "Q7"),
    _c("arch", "unknown output format", "arch table -f yaml", "yaml", code=2),
    _c("arch", "unknown subcommand", "arch frobnicate", "frobnicate", code=2),
    # nas hw
    _c("hw", "missing hardware table", "hw list --tables missing.csv", "missing.csv"),
    _c("hw", "table with a wrong header", "hw list --tables header.csv", "header.csv", setup=FI),
    _c("hw", "negative latency in a table", "hw list --tables negative.csv", "negative.csv", setup=FI),
    _c("hw", "non-numeric latency in a table", "hw list --tables words.csv", "words.csv", setup=FI),
    _c("hw", "unknown architecture in a table", "hw list --tables unknown_arch.csv", "Q7", setup=FI),
    _c("hw", "unknown target", "hw fit --target Z80", "Z80"),
    _c("hw", "unknown predictor family", "hw fit --family bogus", "bogus", code=2),
    _c("hw", "predictor folder is a file", "hw fit --target T4 --save afile", "afile", setup=FI),
    _c("hw", "predict: unknown preset", "hw predict Z9", "Z9"),
    _c("hw", "predict: unknown target", "hw predict A0 --target Z80", "Z80"),
    _c("hw", "predict: missing predictor folder", "hw predict A0 --load nowhere", "nowhere"),
    _c("hw", "predict: damaged predictor file", "hw predict A0 --target T4 --load pred", "T4.json", setup=FI),
    _c("hw", "suggest without a target", "hw suggest", "--target", code=2),
    _c("hw", "suggest: zero suggestions", "hw suggest --target T4 -n 0", "0"),
    _c("hw", "suggest: malformed depth range", "hw suggest --target T4 --depths 1-x", "1-x"),
    _c("hw", "suggest: missing space file", "hw suggest --target T4 --space missing.toml", "missing.toml"),
    _c("hw", "suggest: space file that is not TOML", "hw suggest --target T4 --space bad.toml", "bad.toml",
       setup=FI),
    _c("hw", "suggest: unknown key in a space file", "hw suggest --target T4 --space unknown.toml", "colours",
       setup=FI),
    _c("hw", "suggest: width 0 in a space file", "hw suggest --target T4 --space badwidth.toml", "width",
       setup=FI),
    _c("hw", "plot into a missing folder", "hw plot --out nowhere/hw.png", "nowhere", absent=("nowhere",)),
    _c("hw", "measure: unknown preset", "hw measure --presets Z9 --out t.csv", "Z9", absent=("t.csv",)),
    _c("hw", "measure: non-numeric thread count", "hw measure --ort-threads two", "two", code=2),
    _c("hw", "measure: unknown precision", "hw measure --precision fp64 --out t.csv", "fp64", absent=("t.csv",)),
    _c("hw", "measure: missing spec list", "hw measure --specs missing.txt --out t.csv", "missing.txt",
       absent=("t.csv",)),
    _c("hw", "measure: bad line in a spec list", "hw measure --specs specs.txt --out t.csv", "not_a_spec",
       setup=FI, absent=("t.csv",)),
    _c("hw", "measure: zero timed runs", "hw measure --presets A0 --runs 0 --out t.csv", "runs",
       absent=("t.csv",)),
    _c("hw", "measure: table in a missing folder", "hw measure --presets A0 --out nowhere/t.csv", "nowhere",
       absent=("nowhere",)),
    # nas data
    _c("data", "missing data folder", "data stats missing", "missing"),
    _c("data", "a file instead of a folder", "data stats afile", "afile", setup=IM),
    _c("data", "folder without class folders", "data stats empty_dir", "empty_dir", setup=IM),
    _c("data", "class folders without images", "data split noimg", "image", setup=IM),
    _c("data", "flip probability above 1", "data stats --hflip 2", "2"),
    _c("data", "crop scale with one number", "data stats --crop-scale 0.5", "0.5", code=2),
    _c("data", "crop scale reversed", "data stats --crop-scale 1,0.5", "crop"),
    _c("data", "unknown loss", "data stats --loss focal", "focal"),
    _c("data", "long-tail factor below 1", "data stats --long-tail exp:0.5", "0.5"),
    _c("data", "unknown long-tail profile", "data stats --long-tail zipf", "zipf"),
    _c("data", "label smoothing above 1", "data stats --label-smoothing 1.5", "1.5"),
    _c("data", "selection ratio above 1", "data split --selection-ratio 1.5", "1.5"),
    _c("data", "negative test ratio", "data split --test-ratio -0.1", "-0.1"),
    _c("data", "ratios that leave no training images", "data split --selection-ratio 0.6 --test-ratio 0.6",
       "ratio"),
    _c("data", "zero images per class", "data split --max-per-class 0", "0"),
    _c("data", "resolution below 32 px", "data split --resolution 8", "8"),
    _c("data", "report folder is a file", "data stats --out-dir afile", "afile", setup=IM),
    # nas eval
    _c("eval", "missing checkpoint", "eval --checkpoint missing.pt", "missing.pt"),
    _c("eval", "a pickle that would run code", "eval --checkpoint evil.pt", "code", setup=CK),
    _c("eval", "truncated checkpoint", "eval --checkpoint half.pt", "truncated", setup=CK),
    _c("eval", "random bytes", "eval --checkpoint noise.pt", "not a PyTorch file", setup=CK),
    _c("eval", "empty file", "eval --checkpoint empty.pt", "empty", setup=CK),
    _c("eval", "a torch file of something else", "eval --checkpoint foreign.pt", "not a repvgg-hwnas", setup=CK),
    _c("eval", "a folder as checkpoint", "eval --checkpoint run_done", "run_done", setup=CK),
    _c("eval", "missing data folder", "eval --checkpoint ckpt.pt --data missing", "missing", setup=CK),
    _c("eval", "data with other classes", "eval --checkpoint ckpt.pt --data imgs", "classes",
       setup=CK + IM),
    _c("eval", "zero batch size", "eval --checkpoint ckpt.pt --batch-size 0", "batch", setup=CK),
    _c("eval", "report folder is a file", "eval --checkpoint ckpt.pt --out-dir afile", "afile", setup=CK + IM),
    _c("eval", "no checkpoint given", "eval", "--checkpoint", code=2),
    _c("eval", "unknown split", "eval --checkpoint ckpt.pt --split val", "val", code=2),
    # nas train
    _c("train", "unknown preset", "train --arch Z9 --out run", "Z9", absent=("run",)),
    _c("train", "malformed spec", "train --arch repvgg_d1 --out run", "repvgg_d1", absent=("run",)),
    _c("train", "no output folder", f"train --arch {TINY}", "--out", code=2),
    _c("train", "output folder is a file", f"train --arch {TINY} --out afile", "afile", setup=IM),
    _c("train", "zero epochs", f"train {T} --epochs 0", "epochs", absent=("run",)),
    _c("train", "zero batch size", f"train {T} --batch-size 0", "batch_size", absent=("run",)),
    _c("train", "learning rate 0", f"train {T} --lr 0", "lr", absent=("run",)),
    _c("train", "negative learning rate", f"train {T} --lr -1", "lr", absent=("run",)),
    _c("train", "learning rate nan", f"train {T} --lr nan", "lr", absent=("run",)),
    _c("train", "negative warm-up", f"train {T} --warmup-epochs -1", "warmup", absent=("run",)),
    _c("train", "negative weight decay", f"train {T} --weight-decay -1", "weight_decay", absent=("run",)),
    _c("train", "zero steps", f"train {T} --max-steps 0", "max_steps", absent=("run",)),
    _c("train", "unknown loss", f"train {T} --loss focal", "focal", absent=("run",)),
    _c("train", "malformed long-tail profile", f"train {T} --long-tail exp:x", "'x'", absent=("run",)),
    _c("train", "flip probability above 1", f"train {T} --hflip 1.5", "1.5", absent=("run",)),
    _c("train", "crop scale from 0", f"train {T} --crop-scale 0,1", "crop", absent=("run",)),
    _c("train", "negative label smoothing", f"train {T} --label-smoothing -0.1", "smoothing", absent=("run",)),
    _c("train", "unknown data sampler", f"train {T} --data-sampler bogus", "bogus", code=2),
    _c("train", "absent CUDA device", f"train {T} --device cuda:7", "cuda:7", absent=("run",)),
    _c("train", "unknown device", f"train {T} --device tpu", "tpu", absent=("run",)),
    _c("train", "float16 on the CPU", f"train {T} --device cpu --amp", "amp", absent=("run",)),
    _c("train", "negative loader workers", f"train {T} --workers -1", "workers", absent=("run",)),
    _c("train", "zero torch threads", f"train {T} --torch-threads 0", "threads", absent=("run",)),
    _c("train", "resolution below 32 px", f"train {T} --resolution 8", "8", absent=("run",)),
    _c("train", "spec's class count differs from the data's", f"train --arch {TINY}_c5 --out run", "classes",
       absent=("run",)),
    _c("train", "output folder already holds a checkpoint", f"train --arch {TINY} --out run_done",
       "already holds", setup=CK),
    _c("train", "nothing to resume", "train --resume --out run", "resume", absent=("run",)),
    _c("train", "resuming a pickle that would run code", "train --resume --out run_evil", "code", setup=CK),
    _c("train", "resume together with a trial", "train --trial 0 --resume --out run", "--trial", code=2),
    _c("train", "missing data folder", f"train {T} --data missing", "missing", absent=("run",)),
    _c("train", "a single class", f"train {T} --data one", "class", setup=IM, absent=("run",)),
    _c("train", "selection ratio 0", f"train {T} --selection-ratio 0", "selection", absent=("run",)),
    _c("train", "missing trial", f"train --trial 99 --storage {DB} --out run", "99", setup=ST, absent=("run",)),
    _c("train", "failed trial", f"train --trial 2 --storage {DB} --out run", "failed", setup=ST, absent=("run",)),
    _c("train", "infeasible trial", f"train --trial 3 --storage {DB} --out run", "infeasible", setup=ST,
       absent=("run",)),
    _c("train", "missing storage", "train --trial 0 --storage sqlite:///missing.db --out run", "missing.db",
       absent=("run", "missing.db")),
    _c("train", "diverging learning rate", f"train {T} --lr 1e6 --epochs 1 --max-steps 40", "loss",
       absent=("run",), steps=None, slow=True),
    # nas search
    _c("search", "negative timeout", "search -o macs,params --classes 10 --timeout -5", "timeout",
       absent=("nas.db",)),
    _c("search", "heartbeat 0", "search -o macs,params --classes 10 --heartbeat 0", "heartbeat", absent=("nas.db",)),
    _c("search", "grace period within one heartbeat", "search -o macs,params --classes 10 --grace 5", "grace",
       absent=("nas.db",)),
    _c("search", "negative retry count", "search -o macs,params --classes 10 --max-retry -1", "retry",
       absent=("nas.db",)),
    _c("search", "one class", "search -o macs,params --classes 1", "class", absent=("nas.db",)),
    _c("search", "zero trials", "search -o macs,params --classes 10 --trials 0", "trials", absent=("nas.db",)),
    _c("search", "zero proxy seeds", "search --repeats 0", "repeats", absent=("nas.db",)),
    _c("search", "unknown objective", "search -o speed", "speed", absent=("nas.db",)),
    _c("search", "objective given twice", "search -o macs,macs --classes 10", "twice", absent=("nas.db",)),
    _c("search", "latency on an unknown target", "search -o latency:Z80 --classes 10", "Z80", absent=("nas.db",)),
    _c("search", "latency limit without a value", "search -o macs --classes 10 --max-latency T4", "T4",
       absent=("nas.db",)),
    _c("search", "latency limit on an unknown target", "search -o macs --classes 10 --max-latency Z80=1", "Z80",
       absent=("nas.db",)),
    _c("search", "non-numeric memory limit", "search -o macs --classes 10 --max-memory abc", "abc",
       absent=("nas.db",)),
    _c("search", "negative parameter limit", "search -o macs --classes 10 --max-params -5", "-5",
       absent=("nas.db",)),
    _c("search", "storage that is not a URL", "search -o macs --classes 10 --storage nas.db", "URL",
       absent=("nas.db",)),
    _c("search", "storage in a missing folder", "search -o macs --classes 10 --storage sqlite:///nowhere/nas.db",
       "nowhere", absent=("nowhere",)),
    _c("search", "unreachable database server",
       "search -o macs --classes 10 --storage postgresql://user:s3cret@127.0.0.1:9/nas", "127.0.0.1"),
    _c("search", "malformed depth range", "search -o macs --classes 10 --depths 1-x", "1-x", absent=("nas.db",)),
    _c("search", "width 0 in the space", "search -o macs --classes 10 --widths 0/1", "width", absent=("nas.db",)),
    _c("search", "unknown block type", "search -o macs --classes 10 --blocks foo", "foo", absent=("nas.db",)),
    _c("search", "unsupported group count", "search -o macs --classes 10 --groups 3", "3", absent=("nas.db",)),
    _c("search", "resolution below 32 px", "search -o macs --classes 10 --resolution 8", "8", absent=("nas.db",)),
    _c("search", "missing space file", "search -o macs --classes 10 --space missing.toml", "missing.toml",
       absent=("nas.db",)),
    _c("search", "space file that is not TOML", "search -o macs --classes 10 --space bad.toml", "bad.toml",
       setup=FI, absent=("nas.db",)),
    _c("search", "unknown sampler", "search --sampler annealing", "annealing", code=2),
    _c("search", "missing data folder", "search --data missing", "missing", absent=("nas.db",)),
    _c("search", "class count differs from the data's", "search -o acc,macs --data imgs --classes 5", "classes",
       setup=IM, absent=("nas.db",)),
    _c("search", "zero proxy steps", "search --proxy-steps 0", "steps", absent=("nas.db",)),
    _c("search", "zero proxy images", "search --proxy-images 0", "images", absent=("nas.db",)),
    _c("search", "missing hardware table", "search -o macs --classes 10 --tables missing.csv", "missing.csv",
       absent=("nas.db",)),
    _c("search", "unknown loss", "search --loss focal", "focal", absent=("nas.db",)),
    _c("search", "resuming a study with other objectives", f"search -o macs,memory --classes 10 --storage {DB} "
       "--study s", "objectives", setup=ST),
    # nas pareto
    _c("pareto", "missing storage", "pareto --storage sqlite:///missing.db", "missing.db", absent=("missing.db",)),
    _c("pareto", "unknown study", f"pareto --storage {DB} --study nope", "nope", setup=ST),
    _c("pareto", "a study without a feasible complete trial", "pareto --storage sqlite:///empty.db",
       "no feasible complete trial", setup=ST),
    _c("pareto", "limits that leave no trial", f"pareto --storage {DB} --study s --max-macs 1", "limits", setup=ST),
    _c("pareto", "accuracy floor on a study without accuracy", f"pareto --storage {DB} --study s --min-acc 0.5",
       "acc", setup=ST),
    _c("pareto", "best-acc-under on a study without accuracy",
       f"pareto --storage {DB} --study s --pick best-acc-under --under T4=1", "accuracy", setup=ST),
    _c("pareto", "a storage with two studies and none named", "pareto --storage sqlite:///two.db", "2 studies",
       setup=ST),
    _c("pareto", "plot to an unknown file type", f"pareto --storage {DB} --study s --plot front.txt", "front.txt",
       setup=ST, absent=("front.txt",)),
    _c("pareto", "plot into a missing folder", f"pareto --storage {DB} --study s --plot nowhere/front.png",
       "nowhere", setup=ST, absent=("nowhere",)),
    # nas export
    _c("export", "nothing to export", f"export {X}", "--arch", code=2),
    _c("export", "a front and a checkpoint together", f"export --pareto --checkpoint ckpt.pt {X}", "--checkpoint",
       code=2),
    _c("export", "negative int8 budget", f"export --checkpoint ckpt.pt --int8-budget -1 {X}", "int8", code=2),
    _c("export", "a pickle that would run code", f"export --checkpoint evil.pt {X}", "code", setup=CK,
       absent=("exp",), steps=1),
    _c("export", "missing checkpoint", f"export --checkpoint missing.pt {X}", "missing.pt", absent=("exp",),
       steps=1),
    _c("export", "checkpoint of another architecture", f"export --checkpoint ckpt.pt --arch A0 {X}",
       "not repvgg_d2-4-14-1", setup=CK, absent=("exp",), steps=1),
    _c("export", "failed trial", f"export --trial 2 --storage {DB} {X}", "failed", setup=ST, absent=("exp",)),
    _c("export", "infeasible trial", f"export --trial 3 --storage {DB} {X}", "infeasible", setup=ST,
       absent=("exp",)),
    _c("export", "trial still running", f"export --trial 4 --storage {DB} {X}", "running", setup=ST,
       absent=("exp",)),
    _c("export", "missing trial", f"export --trial 99 --storage {DB} {X}", "99", setup=ST, absent=("exp",)),
    _c("export", "a front without a feasible trial", f"export --pareto --storage sqlite:///empty.db {X}",
       "feasible", setup=ST, absent=("exp",)),
    _c("export", "unknown preset", f"export --arch Z9 {X}", "Z9", absent=("exp",)),
    _c("export", "output folder is a file", f"export --arch {TINY} --out afile", "afile", setup=IM),
    _c("export", "zero epochs", f"export --arch {TINY} --epochs 0 {X}", "epochs", absent=("exp",)),
    _c("export", "broken hardware table", f"export --arch {TINY} --tables header.csv {X}", "header.csv",
       setup=FI, absent=("exp",)),
    # nas dashboard
    _c("dashboard", "missing storage", "dashboard --storage sqlite:///missing.db", "missing.db",
       absent=("missing.db",)),
]
