"""Checkpoints: the file format, exact resume, refused mismatches, damaged and old files, atomic writes."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
import torch

from search_space.model import build_model
from search_space.spec import ArchSpec
from trials import checkpoint as ckpt_mod
from trials.checkpoint import LEGACY_TEST_NOTE, Checkpoint
from trials.config import TrainConfig
from trials.data import DataSettings, load_data
from trials.errors import TrainError
from trials.recipe import DIGITS_RECIPE, Recipe
from trials.train import train

TINY = ArchSpec((1, 1, 1, 1), (0.25, 0.25, 0.25, 0.25), resolution=32, num_classes=10)
CLASSES = [str(i) for i in range(10)]
#: The keys of format version 2, as docs/train.md lists them (a training run writes every one).
V2_KEYS = {"format", "version", "spec", "config", "classes", "model_form", "epoch", "step", "model", "optimizer",
           "scheduler", "scaler", "loss", "rng", "history", "best", "metrics", "data"}
AUGMENTED = DIGITS_RECIPE.replace(randaugment=True)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def digits():
    return load_data(None, 32, max_per_class=40)


@pytest.fixture(scope="module")
def digits_augmented():
    """Augmentation draws from torch's global RNG: resume must restore it to match."""
    return load_data(None, 32, max_per_class=40, recipe=AUGMENTED)


def _cfg(recipe: Recipe = DIGITS_RECIPE, **kw) -> TrainConfig:
    """A short config with the digits' recipe (the data's: training refuses another), ``kw`` on top."""
    return TrainConfig(epochs=2, batch_size=32, lr=0.05, device="cpu", seed=3, recipe=recipe).replace(**kw)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, digits) -> Path:
    out = tmp_path_factory.mktemp("run")
    train(TINY, digits, _cfg(), out_dir=out)
    return out


@pytest.mark.parametrize(("loss", "sampler", "data"), [("ce", "none", "digits_augmented"),
                                                       ("eqlv2", "class_balanced", "digits")])
def test_resume_equals_an_uninterrupted_run(tmp_path, request, loss, sampler, data) -> None:
    bundle = request.getfixturevalue(data)
    kw = {"recipe": bundle.recipe, "loss": loss, "data_sampler": sampler}
    full = train(TINY, bundle, _cfg(**kw), out_dir=tmp_path / "full")
    train(TINY, bundle, _cfg(**kw, epochs=1), out_dir=tmp_path / "split")
    resumed = train(TINY, bundle, _cfg(**kw), out_dir=tmp_path / "split", resume=True)
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], msg=key)
    assert [h["train_loss"] for h in full.history] == pytest.approx([h["train_loss"] for h in resumed.history])
    assert Checkpoint.read(tmp_path / "split" / "last.pt").epoch == 2


def test_resuming_from_a_checkpoint_object_equals_resuming_from_the_file(tmp_path, trained, digits) -> None:
    by_file, by_object = tmp_path / "file", tmp_path / "object"
    shutil.copytree(trained, by_file)
    shutil.copytree(trained, by_object)
    a = train(TINY, digits, _cfg(epochs=3), out_dir=by_file, resume=True)
    b = train(TINY, digits, _cfg(epochs=3), out_dir=by_object, resume=Checkpoint.read(by_object / "last.pt"))
    keys = ("epoch", "step", "train_loss", "selection_top1", "selection_balanced_acc", "lr")  # not the timings
    assert [h[k] for h in a.history for k in keys] == pytest.approx([h[k] for h in b.history for k in keys])
    for key, value in a.model.state_dict().items():
        torch.testing.assert_close(value, b.model.state_dict()[key], msg=key)


def test_the_file_is_format_version_2_with_every_documented_key(trained, digits) -> None:
    raw = torch.load(trained / "last.pt", map_location="cpu", weights_only=True)  # the file, not our reader
    assert set(raw) == V2_KEYS and raw["format"] == "repvgg-hwnas-checkpoint" and raw["version"] == 2
    assert ArchSpec.from_dict(raw["spec"]) == TINY and raw["config"] == _cfg().to_dict()
    assert raw["config"]["recipe"]["hflip"] == 0.0 and raw["config"]["recipe"]["long_tail"] == "exp:10"
    assert raw["classes"] == CLASSES and raw["epoch"] == 2 and raw["model_form"] == "train"
    steps_per_epoch = len(digits.train) // 32  # drop_last: every step a full batch
    assert raw["step"] == 2 * steps_per_epoch and raw["metrics"] == raw["history"][-1]
    # the settings the fixture loaded with (load_data(None, 32, max_per_class=40): the defaults otherwise)
    assert raw["data"]["settings"] == {"path": None, "selection_ratio": 0.1, "test_ratio": 0.1, "seed": 0,
                                       "max_per_class": 40}
    report = raw["data"]["report"]
    assert report["source"] == "embedded:sklearn-digits" and report["train_images"] == len(digits.train)


def test_read_gives_typed_accessors(trained, digits) -> None:
    ckpt = Checkpoint.read(trained / "last.pt")
    assert ckpt.spec == TINY and ckpt.config == _cfg() and ckpt.classes == digits.classes
    assert ckpt.epoch == 2 and len(ckpt.history) == 2 and ckpt.training is not None
    assert ckpt.source == trained / "last.pt"
    assert ckpt.sha256 == hashlib.sha256((trained / "last.pt").read_bytes()).hexdigest()
    accs = [h["selection_balanced_acc"] for h in ckpt.history]
    assert ckpt.best == {"epoch": 1 + accs.index(max(accs)), "balanced_acc": max(accs),
                         "top1": ckpt.history[accs.index(max(accs))]["selection_top1"]}
    assert Checkpoint.read(trained / "best.pt").epoch == ckpt.best["epoch"]
    assert ckpt.data == DataSettings(max_per_class=40) and ckpt.notes == ()
    assert ckpt.data_report["selection_images"] == len(digits.selection)


def test_the_recorded_settings_and_recipe_reload_the_same_splits(trained, digits) -> None:
    ckpt = Checkpoint.read(trained / "last.pt")
    again = ckpt.data.load(32, ckpt.config.recipe)
    for split in ("train_eval", "selection", "test"):
        a, b = getattr(digits, split), getattr(again, split)
        assert len(a) == len(b)
        for i in (0, len(a) // 2, len(a) - 1):
            assert torch.equal(a[i][0], b[i][0]) and a[i][1] == b[i][1], (split, i)


def test_build_model_rebuilds_train_and_deploy_forms(trained, digits) -> None:
    ckpt = Checkpoint.read(trained / "last.pt")
    model, deploy = ckpt.build_model(), ckpt.build_model(deploy=True)
    assert not model.training and not deploy.training and deploy.deploy and not model.deploy
    x = torch.stack([digits.selection[i][0] for i in range(8)])
    with torch.no_grad():
        torch.testing.assert_close(deploy(x), model(x), rtol=1e-4, atol=1e-4)
    for key, value in model.state_dict().items():
        assert torch.equal(value, ckpt.model[key]), key


def test_mismatched_resume_is_refused_naming_the_fields(trained, digits) -> None:
    with pytest.raises(TrainError, match=r"config differs \(lr: 0.05 → 0.1, recipe.loss: 'ce' → 'eqlv2'\)"):
        train(TINY, digits, _cfg(lr=0.1, loss="eqlv2"), out_dir=trained, resume=True)
    with pytest.raises(TrainError, match="spec differs in widths"):
        train(TINY.replace(widths=(0.5, 0.25, 0.25, 0.25)), digits, _cfg(), out_dir=trained, resume=True)
    with pytest.raises(TrainError, match="epochs may only be extended"):
        train(TINY, digits, _cfg(epochs=1), out_dir=trained, resume=True)
    with pytest.raises(TrainError, match="already holds a checkpoint"):
        train(TINY, digits, _cfg(), out_dir=trained)
    ckpt = Checkpoint.read(trained / "last.pt")
    with pytest.raises(TrainError, match="classes differ"):
        ckpt.check_resume(TINY, _cfg(), list("abcdefghij"))
    with pytest.raises(TrainError, match=r"data settings differ \(seed: 0 → 1\)"):
        ckpt.check_resume(TINY, _cfg(), CLASSES, data=DataSettings(max_per_class=40, seed=1))
    with pytest.raises(TrainError, match="loaded with another recipe"):  # the bundle flips, the config does not
        train(TINY, digits, _cfg(hflip=0.5), out_dir=trained, resume=True)


def test_resume_may_extend_the_epochs(tmp_path, trained, digits) -> None:
    out = tmp_path / "more"
    shutil.copytree(trained, out)
    result = train(TINY, digits, _cfg(epochs=3), out_dir=out, resume=True)
    assert result.metrics["epochs"] == 3 and len(result.history) == 3
    assert Checkpoint.read(out / "last.pt").config.epochs == 3


def test_nothing_to_resume_and_a_model_only_checkpoint_cannot_be_resumed(tmp_path, digits) -> None:
    with pytest.raises(TrainError, match="nothing to resume"):
        train(TINY, digits, _cfg(), out_dir=tmp_path, resume=True)
    Checkpoint(TINY, _cfg(), CLASSES, build_model(TINY).state_dict()).write(tmp_path / "last.pt")
    with pytest.raises(TrainError, match="holds the model only"):
        train(TINY, digits, _cfg(), out_dir=tmp_path, resume=True)


def test_missing_truncated_corrupt_and_foreign_files_are_rejected(tmp_path, trained) -> None:
    with pytest.raises(TrainError, match="does not exist"):
        Checkpoint.read(tmp_path / "nope.pt")
    data = (trained / "last.pt").read_bytes()
    (tmp_path / "half.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(TrainError, match="truncated or corrupt"):
        Checkpoint.read(tmp_path / "half.pt")
    (tmp_path / "noise.pt").write_bytes(bytes(range(256)) * 10)
    with pytest.raises(TrainError, match="truncated or corrupt"):
        Checkpoint.read(tmp_path / "noise.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    with pytest.raises(TrainError, match="not a repvgg-hwnas checkpoint"):
        Checkpoint.read(tmp_path / "foreign.pt")
    raw = torch.load(trained / "last.pt", weights_only=True)
    torch.save({**raw, "version": 3}, tmp_path / "future.pt")
    with pytest.raises(TrainError, match="format version 3, expected 2"):
        Checkpoint.read(tmp_path / "future.pt")
    wrong = {**raw["model"], "stem.extra": torch.zeros(1)}
    torch.save({**raw, "model": wrong}, tmp_path / "edited.pt")
    with pytest.raises(TrainError, match="does not fit its own spec"):
        Checkpoint.read(tmp_path / "edited.pt").build_model()


def _version_1(path: Path, data: dict, config: dict, history: list | None = None) -> Path:
    """A file as format version 1 wrote it: the flat data entry, the config without a recipe."""
    torch.save({"format": "repvgg-hwnas-checkpoint", "version": 1, "spec": TINY.to_dict(), "config": config,
                "classes": CLASSES, "model": build_model(TINY).state_dict(), "data": data,
                "history": history or []}, path)
    return path


def test_a_version_1_file_loads_with_the_documented_fallbacks(tmp_path) -> None:
    """Before the recipe and the three splits: the old ``sampler`` and flat ``loss`` keys, an augmentation
    dict with a boolean flip, ``val_ratio``, ``val_*`` history keys."""
    config = {k: v for k, v in _cfg(seed=7).to_dict().items() if k != "recipe"}
    config.update(sampler="class_balanced", loss="eqlv2", label_smoothing=0.0)
    report = {"source": "/data/flowers", "layout": "split per class", "resolution": 32, "val_ratio": 0.2,
              "long_tail": "exp:10", "augment": {"scale": [0.5, 1.0], "ratio": [0.75, 1.25], "hflip": True,
                                                 "randaugment": True}}
    history = [{"epoch": 1, "val_top1": 0.5, "val_balanced_acc": 0.4}]
    ckpt = Checkpoint.read(_version_1(tmp_path / "old.pt", report, config, history))
    assert ckpt.model_form == "train" and ckpt.training is None and ckpt.config.seed == 7
    assert ckpt.config.recipe == Recipe(hflip=0.5, crop_scale=(0.5, 1.0), crop_ratio=(0.75, 1.25), randaugment=True,
                                        loss="eqlv2", data_sampler="class_balanced", label_smoothing=0.0,
                                        long_tail="exp:10")
    # no recorded seed: the training seed was the split seed; the old carving had no test split
    assert ckpt.data == DataSettings(path="/data/flowers", selection_ratio=0.2, seed=7)
    assert ckpt.data_report == report and ckpt.notes == (LEGACY_TEST_NOTE,)
    assert ckpt.history == [{"epoch": 1, "selection_top1": 0.5, "selection_balanced_acc": 0.4}]


def test_a_version_1_file_with_a_test_folder_or_three_splits_has_no_note(tmp_path) -> None:
    config = _cfg().to_dict()
    folders = {"source": "/data/cifar", "layout": "train/val folders", "val_ratio": None, "seed": 2}
    ckpt = Checkpoint.read(_version_1(tmp_path / "a.pt", folders, config))
    assert ckpt.notes == () and ckpt.data == DataSettings(path="/data/cifar", seed=2)
    three = {"source": "embedded:sklearn-digits", "layout": "embedded digits", "selection_ratio": 0.1,
             "test_ratio": 0.2, "test_images": 340, "split_seed": 5, "recipe": DIGITS_RECIPE.to_dict()}
    ckpt = Checkpoint.read(_version_1(tmp_path / "b.pt", three, config))
    assert ckpt.notes == () and ckpt.data == DataSettings(test_ratio=0.2, seed=5)
    assert ckpt.config.recipe == DIGITS_RECIPE


def test_data_settings_survive_a_write_and_read(tmp_path) -> None:
    settings = DataSettings(path="/data/x", selection_ratio=0.25, test_ratio=0.05, seed=5, max_per_class=9)
    report = {"source": "/data/x", "classes": 10}
    weights = build_model(TINY).state_dict()
    Checkpoint(TINY, _cfg(), CLASSES, weights, data=settings, data_report=report).write(tmp_path / "c.pt")
    back = Checkpoint.read(tmp_path / "c.pt")
    assert back.data == settings and back.data_report == report and back.config == _cfg()
    Checkpoint(TINY, _cfg(), CLASSES, weights).write(tmp_path / "unknown.pt")  # e.g. trained on hand-made data
    assert Checkpoint.read(tmp_path / "unknown.pt").data is None


def test_an_interrupted_write_leaves_no_half_written_file(tmp_path, monkeypatch, trained) -> None:
    ckpt = Checkpoint.read(trained / "last.pt")
    target = tmp_path / "last.pt"
    ckpt.write(target)
    before = target.read_bytes()

    def crash(obj, handle, *args, **kwargs):
        handle.write(b"PK\x03\x04 partial bytes")
        raise KeyboardInterrupt

    monkeypatch.setattr(ckpt_mod.torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        ckpt.write(target)
    with pytest.raises(KeyboardInterrupt):
        ckpt.write(tmp_path / "fresh.pt")
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_an_inconsistent_checkpoint_cannot_be_made(tmp_path) -> None:
    weights = build_model(TINY).state_dict()
    with pytest.raises(TrainError, match="names 3 classes but its spec has 10"):
        Checkpoint(TINY, _cfg(), ["a", "b", "c"], weights)
    with pytest.raises(TrainError, match="unknown model_form 'fused'"):
        Checkpoint(TINY, _cfg(), CLASSES, weights, model_form="fused")
    assert not list(tmp_path.iterdir())
