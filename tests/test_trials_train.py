"""Training: schedule, parameter groups, config, data checks, samplers, and a short real run on the digits."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
from collections import Counter
from types import SimpleNamespace

import pytest
import torch
from torch.utils.data import TensorDataset

from search_space.spec import ArchSpec
from trials.checkpoint import Checkpoint
from trials.config import TrainConfig
from trials.data import load_data
from trials.distributed import EpochSampler, accuracy_from_confusion
from trials.errors import TrainError
from trials.evaluate import evaluate, result_from_predictions
from trials.recipe import Recipe
from trials.train import lr_factor, param_groups, train

TINY = ArchSpec((1, 1, 1, 1), (0.25, 0.25, 0.25, 0.25), resolution=32, num_classes=10)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def digits():
    return load_data(None, 32)


def _random_bundle(n: int = 48, classes: int = 4, res: int = 32) -> SimpleNamespace:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(n, 3, res, res, generator=g), torch.arange(n) % classes
    return SimpleNamespace(train=TensorDataset(x, y), selection=TensorDataset(x[:16], y[:16]),
                           classes=[f"c{i}" for i in range(classes)], train_counts=[n // classes] * classes)


def test_warmup_then_cosine_at_given_steps() -> None:
    assert lr_factor(0, 100, 10) == pytest.approx(0.1)
    assert lr_factor(4, 100, 10) == pytest.approx(0.5)
    assert lr_factor(9, 100, 10) == pytest.approx(1.0)
    assert lr_factor(10, 100, 10) == pytest.approx(1.0)
    assert lr_factor(55, 100, 10) == pytest.approx(0.5)  # halfway through the cosine
    assert lr_factor(100, 100, 10) == pytest.approx(0.0, abs=1e-12)
    assert lr_factor(0, 10, 0) == pytest.approx(1.0)
    factors = [lr_factor(s, 100, 10) for s in range(10, 101)]
    assert all(a >= b for a, b in itertools.pairwise(factors))


def test_the_optimizer_follows_the_schedule_every_step() -> None:
    seen: list[tuple[int, float]] = []
    cfg = TrainConfig(epochs=2, batch_size=8, lr=0.2, warmup_epochs=1, device="cpu")
    spec = TINY.replace(num_classes=4)
    train(spec, _random_bundle(), cfg,
          on_progress=lambda e: seen.append((e["step"], e["lr"])) if e["event"] == "step" else None)
    total, warmup = 12, 6  # 48 images / 8 per batch = 6 steps per epoch
    assert [s for s, _ in seen] == list(range(1, total + 1))
    for step, lr in seen:  # the lr reported after step s is the one step s+1 will use
        assert lr == pytest.approx(0.2 * lr_factor(step, total, warmup))


def test_no_weight_decay_on_batchnorm_and_biases() -> None:
    from search_space.model import build_model

    model = build_model(TINY)
    decay, no_decay = param_groups(model, 4e-5)
    assert decay["weight_decay"] == 4e-5 and no_decay["weight_decay"] == 0.0
    bn_and_bias = {id(p) for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d) for p in m.parameters()}
    bn_and_bias |= {id(m.bias) for m in model.modules() if getattr(m, "bias", None) is not None}
    assert {id(p) for p in no_decay["params"]} == bn_and_bias
    conv_linear = {id(m.weight) for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))}
    assert {id(p) for p in decay["params"]} == conv_linear
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_config_is_json_able_and_validated() -> None:
    cfg = TrainConfig(lr=0.1, batch_size=32, lr_scaling="linear", max_steps=5)
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert cfg.effective_lr() == pytest.approx(0.0125)  # the seed's "lr 0.1, batch 32"
    assert cfg.effective_lr(world_size=8) == pytest.approx(0.1)
    assert TrainConfig(lr=0.1).effective_lr() == 0.1
    for bad, match in [({"recipe": Recipe(loss="focal")}, "eqlv2"), ({"recipe": Recipe(data_sampler="x")},
                                                                        "class_balanced"),
                       ({"lr_scaling": "sqrt"}, "linear"), ({"epochs": 0}, "epochs"), ({"lr": -1.0}, "lr"),
                       ({"recipe": Recipe(label_smoothing=1.0)}, "label_smoothing"), ({"max_steps": 0}, "max_steps")]:
        with pytest.raises(TrainError, match=match):
            TrainConfig(**bad).validate()
    with pytest.raises(TrainError, match="unknown training config"):
        TrainConfig.from_dict({"epochs": 1, "speed": 9})
    with pytest.raises(TrainError, match="unknown loss 'focal'"):  # the earlier flat form is read and checked
        TrainConfig.from_dict({"loss": "focal"})


def test_the_recipe_is_nested_and_earlier_flat_configs_join_it() -> None:
    cfg = TrainConfig(recipe=Recipe(hflip=0.0, loss="eqlv2"))
    body = cfg.to_dict()
    assert "loss" not in body and body["recipe"]["loss"] == "eqlv2" and body["recipe"]["hflip"] == 0.0
    old = {k: v for k, v in TrainConfig().to_dict().items() if k != "recipe"}
    old.update(loss="balanced_softmax", sampler="class_balanced", label_smoothing=0.0)
    assert TrainConfig.from_dict(old).recipe == Recipe(loss="balanced_softmax", data_sampler="class_balanced",
                                                       label_smoothing=0.0)
    # replace() routes recipe fields into the recipe and ignores None ("not given")
    assert cfg.replace(lr=0.3, data_sampler="class_balanced", loss=None) == TrainConfig(
        lr=0.3, recipe=Recipe(hflip=0.0, loss="eqlv2", data_sampler="class_balanced"))


def test_data_must_fit_the_spec_and_the_recipe(digits) -> None:
    cfg = TrainConfig(epochs=1, device="cpu", recipe=digits.recipe)
    with pytest.raises(TrainError, match="32 px but the spec expects 64 px"):
        train(TINY.replace(resolution=64), digits, cfg)
    with pytest.raises(TrainError, match="spec has 5 classes but the data has 10"):
        train(TINY.replace(num_classes=5), digits, cfg)
    # the digits are loaded without a flip; a config whose recipe flips would record what did not happen
    with pytest.raises(TrainError, match="loaded with another recipe"):
        train(TINY, digits, cfg.replace(hflip=0.5))
    train(TINY, digits, cfg.replace(loss="eqlv2", max_steps=1))  # loss, sampler, smoothing: the trainer's own


class _NeverRead(torch.utils.data.Dataset):
    """A split that fails on any access: proof that training does not touch it."""

    def __len__(self) -> int:
        raise AssertionError("the test split was read")

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        raise AssertionError("the test split was read")


class _Counting(torch.utils.data.Dataset):
    """A split that counts its reads."""

    def __init__(self, inner: torch.utils.data.Dataset) -> None:
        self.inner, self.reads = inner, 0
        self.labels = inner.labels

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        self.reads += 1
        return self.inner[index]


def test_best_pt_is_picked_on_the_selection_split_and_the_test_split_is_never_read(digits, tmp_path) -> None:
    selection = _Counting(digits.selection)
    data = dataclasses.replace(digits, selection=selection, test=_NeverRead())
    cfg = TrainConfig(epochs=3, batch_size=32, lr=0.05, device="cpu", recipe=digits.recipe)
    result = train(TINY, data, cfg, out_dir=tmp_path)
    assert selection.reads == 3 * len(digits.selection)  # scored once per epoch
    best = Checkpoint.read(tmp_path / "best.pt")
    accs = [h["selection_balanced_acc"] for h in result.history]
    assert best.epoch == 1 + accs.index(max(accs))
    # an independent evaluation of best.pt's weights on the selection split gives the recorded figure
    again = evaluate(best.build_model(), digits.selection, digits.classes)
    assert again.balanced_acc == pytest.approx(best.best["balanced_acc"]) == pytest.approx(max(accs))


def test_amp_is_cuda_only() -> None:
    with pytest.raises(TrainError, match="CUDA"):
        train(TINY.replace(num_classes=4), _random_bundle(), TrainConfig(epochs=1, amp=True, device="cpu"))


def test_short_training_on_the_digits_clearly_beats_chance(digits) -> None:
    cfg = TrainConfig(epochs=6, batch_size=32, lr=0.05, device="cpu", recipe=digits.recipe)
    result = train(TINY, digits, cfg)
    m = result.metrics
    assert m["balanced_acc"] >= 0.75  # chance is 0.1 with 10 classes; seeds 0-2 reach 0.93-0.95
    assert m["epochs"] == 6 and m["steps"] == 6 * (len(digits.train) // 32)
    assert len(result.history) == 6 and result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert not result.model.training and result.checkpoint is None


@pytest.mark.parametrize("block", ["repvgg", "qarepvgg"])
def test_channels_last_training_runs_on_cpu(block: str) -> None:
    spec = TINY.replace(num_classes=4, block=block)
    result = train(spec, _random_bundle(), TrainConfig(epochs=1, batch_size=8, channels_last=True, device="cpu"))
    assert math.isfinite(result.metrics["train_loss"]) and result.metrics["steps"] == 6


def test_max_steps_caps_training_and_the_schedule() -> None:
    events: list[dict] = []
    result = train(TINY.replace(num_classes=4), _random_bundle(),
                   TrainConfig(epochs=5, batch_size=8, max_steps=4, device="cpu"), on_progress=events.append)
    assert result.metrics["steps"] == 4 and result.metrics["total_steps"] == 4
    assert [e["event"] for e in events][:2] == ["start", "step"] and events[-1]["event"] == "epoch"
    assert {"loss", "images_per_s", "epoch", "step"} <= set(events[1])


@pytest.mark.parametrize("loss", ["eqlv2", "balanced_softmax", "logit_adjust"])
def test_long_tail_losses_and_balanced_sampler_train(loss: str) -> None:
    cfg = TrainConfig(epochs=1, batch_size=8, device="cpu").replace(loss=loss, data_sampler="class_balanced")
    assert math.isfinite(train(TINY.replace(num_classes=4), _random_bundle(), cfg).metrics["train_loss"])


def test_class_balanced_sampler_is_balanced_deterministic_and_sharded() -> None:
    labels = [0] * 900 + [1] * 90 + [2] * 10
    sampler = EpochSampler(labels, balanced=True, seed=3)
    sampler.set_epoch(2)
    draws = list(sampler)
    counts = Counter(labels[i] for i in draws)
    assert len(draws) == 1000 and all(250 < counts[c] < 420 for c in range(3))
    assert draws == list(sampler)
    sampler.set_epoch(3)
    assert draws != list(sampler)
    shards = [EpochSampler(labels, balanced=True, seed=3, rank=r, world_size=2) for r in range(2)]
    for s in shards:
        s.set_epoch(2)
    joined = [i for pair in zip(*(list(s) for s in shards)) for i in pair]
    assert joined == draws


def test_shuffle_sampler_shards_partition_the_data() -> None:
    labels = list(range(10))
    shards = [EpochSampler(labels, seed=1, rank=r, world_size=3) for r in range(3)]
    seen = sorted(i for s in shards for i in s)
    assert len(shards[0]) == 4 and set(seen) == set(range(10)) and len(seen) == 12  # padded to 3 × 4


def test_confusion_accuracies_agree_with_evaluate() -> None:
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 5, (200,), generator=g)
    preds = torch.where(torch.rand(200, generator=g) < 0.6, labels, torch.randint(0, 5, (200,), generator=g))
    ref = result_from_predictions(labels.numpy(), preds.numpy(), [str(i) for i in range(5)])
    top1, bal = accuracy_from_confusion(torch.from_numpy(ref.confusion).double())
    assert top1 == pytest.approx(ref.top1) and bal == pytest.approx(ref.balanced_acc)
