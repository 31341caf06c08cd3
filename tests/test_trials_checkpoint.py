"""Checkpoints: exact resume, refused mismatches, damaged files, atomic writes, rebuilding the model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from search_space.spec import ArchSpec
from trials import checkpoint as ckpt_mod
from trials.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from trials.config import TrainConfig
from trials.data import load_data
from trials.errors import TrainError
from trials.train import train

TINY = ArchSpec((1, 1, 1, 1), (0.25, 0.25, 0.25, 0.25), resolution=32, num_classes=10)


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
    assert load_checkpoint(tmp_path / "split" / "last.pt")["epoch"] == 2


def test_checkpoint_holds_spec_config_classes_and_state(trained) -> None:
    state = load_checkpoint(trained / "last.pt")
    assert ArchSpec.from_dict(state["spec"]) == TINY and state["config"] == _cfg().to_dict()
    assert state["classes"] == [str(i) for i in range(10)] and state["epoch"] == 2
    for key in ("model", "optimizer", "scheduler", "scaler", "loss", "rng", "history", "best", "data"):
        assert key in state
    assert state["data"]["resolution"] == 32
    best = load_checkpoint(trained / "best.pt")
    accs = [h["val_balanced_acc"] for h in state["history"]]
    assert best["epoch"] == 1 + accs.index(max(accs)) == state["best"]["epoch"]


def test_model_from_checkpoint_rebuilds_train_and_deploy_forms(trained, digits) -> None:
    model, spec, classes, config = model_from_checkpoint(trained / "last.pt")
    deploy, _, _, _ = model_from_checkpoint(trained / "last.pt", deploy=True)
    assert spec == TINY and classes == digits.classes and config == _cfg() and not model.training
    assert deploy.deploy and not model.deploy
    x = torch.stack([digits.val[i][0] for i in range(8)])
    with torch.no_grad():
        torch.testing.assert_close(deploy(x), model(x), rtol=1e-4, atol=1e-4)


def test_mismatched_resume_is_refused_naming_the_fields(trained, digits) -> None:
    with pytest.raises(TrainError, match=r"config differs \(lr: 0.05 → 0.1, loss: 'ce' → 'eqlv2'\)"):
        train(TINY, digits, _cfg(lr=0.1, loss="eqlv2"), out_dir=trained, resume=True)
    with pytest.raises(TrainError, match="spec differs in widths"):
        train(TINY.replace(widths=(0.5, 0.25, 0.25, 0.25)), digits, _cfg(), out_dir=trained, resume=True)
    with pytest.raises(TrainError, match="epochs may only be extended"):
        train(TINY, digits, _cfg(epochs=1), out_dir=trained, resume=True)
    with pytest.raises(TrainError, match="already holds a checkpoint"):
        train(TINY, digits, _cfg(), out_dir=trained)


def test_resume_may_extend_the_epochs(tmp_path, trained, digits) -> None:
    import shutil

    out = tmp_path / "more"
    shutil.copytree(trained, out)
    result = train(TINY, digits, _cfg(epochs=3), out_dir=out, resume=True)
    assert result.metrics["epochs"] == 3 and len(result.history) == 3
    assert load_checkpoint(out / "last.pt")["config"]["epochs"] == 3


def test_nothing_to_resume_is_an_error(tmp_path, digits) -> None:
    with pytest.raises(TrainError, match="nothing to resume"):
        train(TINY, digits, _cfg(), out_dir=tmp_path, resume=True)


def test_missing_truncated_corrupt_and_foreign_files_are_rejected(tmp_path, trained) -> None:
    with pytest.raises(TrainError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")
    data = (trained / "last.pt").read_bytes()
    (tmp_path / "half.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(TrainError, match="truncated or corrupt"):
        load_checkpoint(tmp_path / "half.pt")
    (tmp_path / "noise.pt").write_bytes(bytes(range(256)) * 10)
    with pytest.raises(TrainError, match="truncated or corrupt"):
        model_from_checkpoint(tmp_path / "noise.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    with pytest.raises(TrainError, match="not a repvgg-hwnas checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")


def test_an_interrupted_save_leaves_no_half_written_file(tmp_path, monkeypatch, trained) -> None:
    state = load_checkpoint(trained / "last.pt")
    target = tmp_path / "last.pt"
    save_checkpoint(target, state)
    before = target.read_bytes()

    def crash(obj, handle, *args, **kwargs):
        handle.write(b"PK\x03\x04 partial bytes")
        raise KeyboardInterrupt

    monkeypatch.setattr(ckpt_mod.torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(target, state)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path / "fresh.pt", state)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_a_state_without_the_essentials_is_not_saved(tmp_path) -> None:
    with pytest.raises(TrainError, match="lacks"):
        save_checkpoint(tmp_path / "x.pt", {"model": {}})
    assert not list(tmp_path.iterdir())
