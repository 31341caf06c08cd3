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
from trials.checkpoint import Checkpoint, DataSettings
from trials.config import TrainConfig
from trials.data import load_data
from trials.errors import TrainError
from trials.train import train

TINY = ArchSpec((1, 1, 1, 1), (0.25, 0.25, 0.25, 0.25), resolution=32, num_classes=10)
CLASSES = [str(i) for i in range(10)]
#: The keys of format version 1, as docs/train.md lists them (a training run writes every one).
V1_KEYS = {"format", "version", "spec", "config", "classes", "model_form", "epoch", "step", "model", "optimizer",
           "scheduler", "scaler", "loss", "rng", "history", "best", "metrics", "data"}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def digits():
    return load_data(None, 32, max_per_class=40)


@pytest.fixture(scope="module")
def digits_augmented():
    """Augmentation draws from torch's global RNG: resume must restore it to match."""
    return load_data(None, 32, max_per_class=40, augment=True)


def _cfg(**kw) -> TrainConfig:
    return TrainConfig(**{"epochs": 2, "batch_size": 32, "lr": 0.05, "device": "cpu", "seed": 3, **kw})


@pytest.fixture(scope="module")
def trained(tmp_path_factory, digits) -> Path:
    out = tmp_path_factory.mktemp("run")
    train(TINY, digits, _cfg(), out_dir=out)
    return out


@pytest.mark.parametrize(("loss", "sampler", "data"), [("ce", "none", "digits_augmented"),
                                                       ("eqlv2", "class_balanced", "digits")])
def test_resume_equals_an_uninterrupted_run(tmp_path, request, loss, sampler, data) -> None:
    bundle = request.getfixturevalue(data)
    full = train(TINY, bundle, _cfg(loss=loss, data_sampler=sampler), out_dir=tmp_path / "full")
    train(TINY, bundle, _cfg(loss=loss, data_sampler=sampler, epochs=1), out_dir=tmp_path / "split")
    resumed = train(TINY, bundle, _cfg(loss=loss, data_sampler=sampler), out_dir=tmp_path / "split", resume=True)
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
    keys = ("epoch", "step", "train_loss", "val_top1", "val_balanced_acc", "lr")  # not the timings
    assert [h[k] for h in a.history for k in keys] == pytest.approx([h[k] for h in b.history for k in keys])
    for key, value in a.model.state_dict().items():
        torch.testing.assert_close(value, b.model.state_dict()[key], msg=key)


def test_the_file_is_format_version_1_with_every_documented_key(trained, digits) -> None:
    raw = torch.load(trained / "last.pt", map_location="cpu", weights_only=True)  # the file, not our reader
    assert set(raw) == V1_KEYS and raw["format"] == "repvgg-hwnas-checkpoint" and raw["version"] == 1
    assert ArchSpec.from_dict(raw["spec"]) == TINY and raw["config"] == _cfg().to_dict()
    assert raw["classes"] == CLASSES and raw["epoch"] == 2 and raw["model_form"] == "train"
    steps_per_epoch = len(digits.train) // 32  # drop_last: every step a full batch
    assert raw["step"] == 2 * steps_per_epoch and raw["metrics"] == raw["history"][-1]
    data = raw["data"]
    assert (data["path"], data["seed"], data["resolution"], data["val_ratio"]) == (None, 3, 32, 0.1)
    assert data["source"] == digits.report.source and data["train_images"] == len(digits.train)


def test_read_gives_typed_accessors(trained, digits) -> None:
    ckpt = Checkpoint.read(trained / "last.pt")
    assert ckpt.spec == TINY and ckpt.config == _cfg() and ckpt.classes == digits.classes
    assert ckpt.epoch == 2 and len(ckpt.history) == 2 and ckpt.training is not None
    assert ckpt.source == trained / "last.pt"
    assert ckpt.sha256 == hashlib.sha256((trained / "last.pt").read_bytes()).hexdigest()
    accs = [h["val_balanced_acc"] for h in ckpt.history]
    assert ckpt.best == {"epoch": 1 + accs.index(max(accs)), "balanced_acc": max(accs),
                         "top1": ckpt.history[accs.index(max(accs))]["val_top1"]}
    assert Checkpoint.read(trained / "best.pt").epoch == ckpt.best["epoch"]
    assert ckpt.data.split_options() == {"path": None, "val_ratio": 0.1, "long_tail": digits.report.long_tail,
                                         "seed": 3, "max_per_class": None}


def test_build_model_rebuilds_train_and_deploy_forms(trained, digits) -> None:
    ckpt = Checkpoint.read(trained / "last.pt")
    model, deploy = ckpt.build_model(), ckpt.build_model(deploy=True)
    assert not model.training and not deploy.training and deploy.deploy and not model.deploy
    x = torch.stack([digits.val[i][0] for i in range(8)])
    with torch.no_grad():
        torch.testing.assert_close(deploy(x), model(x), rtol=1e-4, atol=1e-4)
    for key, value in model.state_dict().items():
        assert torch.equal(value, ckpt.model[key]), key


def test_mismatched_resume_is_refused_naming_the_fields(trained, digits) -> None:
    with pytest.raises(TrainError, match=r"config differs \(lr: 0.05 → 0.1, loss: 'ce' → 'eqlv2'\)"):
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
    torch.save({**raw, "version": 2}, tmp_path / "future.pt")
    with pytest.raises(TrainError, match="format version 2, expected 1"):
        Checkpoint.read(tmp_path / "future.pt")
    wrong = {**raw["model"], "stem.extra": torch.zeros(1)}
    torch.save({**raw, "model": wrong}, tmp_path / "edited.pt")
    with pytest.raises(TrainError, match="does not fit its own spec"):
        Checkpoint.read(tmp_path / "edited.pt").build_model()


def test_an_older_file_loads_with_the_documented_fallbacks(tmp_path) -> None:
    """Version 1 as written before the data settings were recorded, with the old ``sampler`` config key."""
    config = {**_cfg(seed=7).to_dict(), "sampler": "class_balanced"}
    del config["data_sampler"]
    report = {"source": "/data/flowers", "layout": "class-folders", "resolution": 32, "val_ratio": None,
              "long_tail": "exp:10", "augment": {"scale": [0.5, 1.0], "randaugment": True}}
    torch.save({"format": "repvgg-hwnas-checkpoint", "version": 1, "spec": TINY.to_dict(), "config": config,
                "classes": CLASSES, "model": build_model(TINY).state_dict(), "data": report}, tmp_path / "old.pt")
    ckpt = Checkpoint.read(tmp_path / "old.pt")
    assert ckpt.config.data_sampler == "class_balanced" and ckpt.model_form == "train" and ckpt.training is None
    assert ckpt.data == DataSettings(path="/data/flowers", val_ratio=0.1, long_tail="exp:10", seed=7,
                                     augment=True, resolution=32, report=report)
    embedded = {**report, "source": "embedded:digits"}
    assert DataSettings.from_recorded(embedded, default_seed=4).path is None
    assert DataSettings.from_recorded({}, default_seed=4) == DataSettings(seed=4)


def test_data_settings_survive_a_write_and_read(tmp_path) -> None:
    settings = DataSettings(path="/data/x", val_ratio=0.25, long_tail="seed", seed=5, max_per_class=9, augment=True,
                            resolution=32, report={"source": "/data/x", "classes": 10})
    Checkpoint(TINY, _cfg(), CLASSES, build_model(TINY).state_dict(), data=settings).write(tmp_path / "c.pt")
    back = Checkpoint.read(tmp_path / "c.pt").data
    assert back.split_options() == settings.split_options()
    assert (back.augment, back.resolution, back.report["classes"]) == (True, 32, 10)
    assert DataSettings.from_recorded(back.to_dict()) == back


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
