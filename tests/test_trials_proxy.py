"""Proxy accuracy (the recipe at a fixed budget) and zero-cost scores (synflow, NASWOT, grad-norm)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from search_space.cost import analyze
from search_space.model import build_model, reparameterize
from search_space.spec import ArchSpec
from trials.data import load_data
from trials.errors import TrainError
from trials.longtail import exp_counts, shape_subset
from trials.proxy import ProxyBudget, ProxyConfig, proxy_accuracy, proxy_data
from trials.recipe import Recipe
from trials.zero_cost import naswot_kernel, naswot_score, synflow_log, zero_cost_scores

TINY = ArchSpec((1, 1, 1, 1), (0.25, 0.25, 0.25, 0.25), resolution=32, num_classes=10)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def digits():
    return load_data(None, 32)


def test_proxy_on_the_digits_is_fast_deterministic_and_beats_chance(digits) -> None:
    first = proxy_accuracy(TINY, digits)
    again = proxy_accuracy(TINY.replace(num_classes=1000), digits)  # the class count follows the data
    assert first.balanced_acc >= 0.5 and first.top1 >= 0.5  # chance: 0.1
    assert (first.top1, first.balanced_acc, first.steps) == (again.top1, again.balanced_acc, again.steps)
    budget = ProxyBudget()
    assert len(digits.train) <= budget.train_images and first.train_images == len(digits.train)  # all kept
    assert first.selection_images == sum(min(n, budget.selection_per_class) for n in digits.selection_counts)
    assert first.resolution == 32 and first.epochs == budget.epochs
    assert first.steps == first.epochs * (first.train_images // budget.batch_size)


def test_max_steps_bounds_the_budget_of_any_spec(digits) -> None:
    big = ArchSpec((2, 4, 14, 1), (0.75, 0.75, 0.75, 2.5), resolution=32, num_classes=1000)  # A0's widths
    torch.set_num_threads(2)
    torch.manual_seed(123)
    expected_draw = torch.rand(3)
    torch.manual_seed(123)
    budget = ProxyBudget(max_steps=2, train_images=40, selection_per_class=2)
    result = proxy_accuracy(big, digits, ProxyConfig(budget=budget))
    assert torch.get_num_threads() == 2  # the proxy ran on its own 1 thread and restored the caller's
    torch.testing.assert_close(torch.rand(3), expected_draw)  # … and the caller's RNG state
    assert result.steps == 2 and result.selection_images == 20
    assert 0.0 <= result.balanced_acc <= 1.0


def test_the_proxy_trains_at_the_specs_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    import trials.train

    seen: set[tuple[int, ...]] = set()
    real = trials.train.build_model

    def recording(spec: ArchSpec) -> torch.nn.Module:
        model = real(spec)
        model.register_forward_pre_hook(lambda _m, args: seen.add(tuple(args[0].shape[-3:])))
        return model

    monkeypatch.setattr(trials.train, "build_model", recording)
    spec = TINY.replace(resolution=48)
    data = load_data(None, 48, max_per_class=30)
    result = proxy_accuracy(spec, data, ProxyConfig(budget=ProxyBudget(max_steps=3, epochs=1)))
    assert result.resolution == 48 and seen == {(3, 48, 48)}  # training and scoring, all at 48 px
    with pytest.raises(TrainError, match="48 px but the spec runs at 32 px"):
        proxy_accuracy(TINY, data)  # no silent resize


def test_proxy_and_full_training_see_the_same_pixels_for_the_same_recipe() -> None:
    recipe = Recipe(hflip=0.5, crop_scale=(0.3, 0.7), long_tail="exp:4")
    search_data = load_data(None, 32, recipe=recipe, seed=2)
    training_data = load_data(None, 32, recipe=recipe, seed=2)  # what full training loads
    other_recipe = load_data(None, 32, recipe=recipe.replace(crop_scale=(0.9, 1.0)), seed=2)
    subset = proxy_data(search_data, ProxyConfig(budget=ProxyBudget(train_images=100)))
    positions = subset.train.indices[:16]  # items of the bundle's training set

    def batch(dataset: Dataset, items: list[int]) -> torch.Tensor:
        torch.manual_seed(7)
        return torch.stack([x for x, _ in dataset.__getitems__(items)])

    proxy_view = batch(subset.train, list(range(16)))
    assert torch.equal(proxy_view, batch(training_data.train, positions))  # same transform, same draws
    assert not torch.equal(proxy_view, batch(other_recipe.train, positions))  # another recipe differs
    plain = torch.stack([search_data.train_eval[i][0] for i in positions])
    assert not torch.equal(proxy_view, plain)  # augmented, not the evaluation crop


def test_the_subset_keeps_the_class_count_shape() -> None:
    counts = exp_counts(5000, 10, 100)  # CIFAR-10-LT's training split
    labels = np.repeat(np.arange(10), counts)
    for budget in (300, 1000, 2500):
        kept = np.bincount(labels[shape_subset(labels, budget, seed=0)], minlength=10)
        expected = max(counts) / min(counts)  # 100, from the counts alone
        assert abs(kept.max() / kept.min() - expected) <= 0.1 * expected
        assert kept.min() >= 5 and len(np.unique(shape_subset(labels, budget, seed=0))) == kept.sum()
    assert len(shape_subset(labels, None, seed=0)) == len(labels)


def test_the_proxy_subset_of_a_long_tailed_bundle_keeps_its_imbalance(digits) -> None:
    data = digits  # long-tailed with exp:10: 140 → 14 training images per class
    full = np.bincount(data.train_labels.numpy(), minlength=10)
    expected = full.max() / full.min()  # the training split's own ratio
    subset = proxy_data(data, ProxyConfig(budget=ProxyBudget(train_images=150)))
    kept = np.asarray(subset.train_counts)
    assert len(subset.train) < len(data.train) / 2
    assert abs(kept.max() / kept.min() - expected) <= 0.1 * expected


class _Untouchable(Dataset):
    """A test split that fails the run if anything reads it."""

    def __len__(self) -> int:
        return 170

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        raise AssertionError("the proxy read a test image")


def test_the_proxy_never_reads_the_test_split() -> None:
    data = load_data(None, 32)
    data.test = _Untouchable()
    result = proxy_accuracy(TINY, data, ProxyConfig(budget=ProxyBudget(max_steps=3)))
    assert result.steps == 3


def test_the_proxy_recipe_must_match_the_datas_augmentation(digits) -> None:
    with pytest.raises(TrainError, match="differently"):
        proxy_accuracy(TINY, digits, ProxyConfig(recipe=Recipe()))  # flip on, digits loaded without
    config = ProxyConfig(recipe=digits.recipe.replace(loss="balanced_softmax", label_smoothing=0.0))
    trained_with = config.train_config(config.recipe).recipe
    assert (trained_with.loss, trained_with.label_smoothing, trained_with.data_sampler) == (
        "balanced_softmax", 0.0, "none")
    assert proxy_accuracy(TINY, digits, ProxyConfig(recipe=config.recipe,
                                                    budget=ProxyBudget(max_steps=2))).steps == 2


def test_bad_proxy_budgets_are_rejected() -> None:
    for bad in (ProxyBudget(train_images=0), ProxyBudget(selection_per_class=0), ProxyBudget(max_steps=0)):
        with pytest.raises(TrainError):
            proxy_accuracy(TINY, None, ProxyConfig(budget=bad))
    body = ProxyConfig().to_dict()
    assert body["recipe"] is None and body["budget"]["max_steps"] == ProxyBudget().max_steps


def test_zero_cost_scores_are_finite_deterministic_and_beside_params_and_macs(digits) -> None:
    scores = zero_cost_scores(TINY, digits)
    assert scores == zero_cost_scores(TINY, digits)
    assert set(scores) == {"synflow", "log_synflow", "naswot", "grad_norm", "params", "macs"}
    assert all(math.isfinite(v) for v in scores.values())
    report = analyze(TINY)
    assert scores["params"] == report.params and scores["macs"] == report.macs
    assert scores["synflow"] == pytest.approx(math.exp(scores["log_synflow"]))
    assert scores["grad_norm"] > 0


def test_synflow_equals_a_direct_float64_pass_and_grows_with_width() -> None:
    torch.manual_seed(0)
    model = reparameterize(build_model(TINY), inplace=True).double()
    with torch.no_grad():
        for p in model.parameters():
            p.abs_()
        for m in model.modules():
            if getattr(m, "bias", None) is not None:
                m.bias.zero_()
    model(torch.ones(1, 3, 32, 32, dtype=torch.float64)).sum().backward()
    layers = [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    direct = sum(float((m.weight.detach() * m.weight.grad).abs().sum()) for m in layers)
    assert synflow_log(TINY) == pytest.approx(math.log(direct), rel=1e-12)
    assert synflow_log(TINY.replace(widths=(0.5, 0.5, 0.5, 0.5))) > synflow_log(TINY)


def test_naswot_kernel_is_units_minus_hamming_distance() -> None:
    g = torch.Generator().manual_seed(1)
    codes = torch.rand(5, 40, generator=g) > 0.5
    kernel = naswot_kernel(codes)
    for i in range(5):
        for j in range(5):
            assert kernel[i, j] == 40 - int((codes[i] != codes[j]).sum())


def test_naswot_is_minus_infinity_for_duplicate_images() -> None:
    torch.manual_seed(0)
    model = build_model(TINY).train()
    x = torch.randn(4, 3, 32, 32)
    assert math.isfinite(naswot_score(model, x))
    assert naswot_score(model, torch.cat([x, x[:1]])) == -math.inf


def test_every_proxy_seed_scores_the_same_selection_images_and_reports_each_prediction(digits) -> None:
    configs = [ProxyConfig(budget=ProxyBudget(max_steps=4, epochs=1, selection_per_class=5, seed=s)) for s in (0, 1)]
    runs = [proxy_accuracy(TINY, digits, c) for c in configs]
    views = [proxy_data(digits, c) for c in configs]
    assert views[0].selection.indices == views[1].selection.indices  # paired: the same scored images
    expected_labels = digits.selection_labels[views[0].selection.indices].tolist()
    for run in runs:
        labels, predicted = np.asarray(run.selection_labels), np.asarray(run.selection_predictions)
        assert labels.tolist() == expected_labels and len(labels) == run.selection_images == 50
        assert run.top1 == pytest.approx(float(np.mean(predicted == labels)))
        recalls = [np.mean(predicted[labels == c] == c) for c in range(10)]  # 5 images of every class
        assert run.balanced_acc == pytest.approx(float(np.mean(recalls)))
    assert runs[0].selection_predictions != runs[1].selection_predictions  # another seed, another model
