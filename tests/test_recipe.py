"""trials.recipe: fields, defaults per data kind, JSON, validation; the flip as a probability; mirrored classes."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from trials.errors import DataError, TrainError
from trials.recipe import DATA_FIELDS, DIGITS_RECIPE, TRAIN_FIELDS, Recipe
from trials.transforms import TrainAugment, TrainTransform, train_augment

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_defaults_per_kind_of_data() -> None:
    folder = Recipe.for_data("/any/folder")
    assert folder == Recipe() and folder.hflip == 0.5 and folder.crop_scale == (0.6, 1.0)
    assert folder.long_tail is None and (folder.loss, folder.data_sampler) == ("ce", "none")
    digits = Recipe.for_data(None)
    assert digits is DIGITS_RECIPE and digits.hflip == 0 and digits.long_tail == "exp:10"
    assert train_augment(digits).hflip == 0  # the digits' augmentation never flips
    assert set(DATA_FIELDS) | set(TRAIN_FIELDS) == {f for f in Recipe().to_dict()}


def test_json_round_trip_and_describe() -> None:
    recipe = Recipe(hflip=0.25, crop_scale=(0.4, 0.9), randaugment=True, loss="balanced_softmax",
                    data_sampler="class_balanced", label_smoothing=0.0, long_tail="exp:50")
    back = Recipe.from_dict(json.loads(json.dumps(recipe.to_dict())))
    assert back == recipe and isinstance(back.crop_scale, tuple)
    assert Recipe.from_dict({"hflip": 0}) == Recipe(hflip=0)  # absent fields take the defaults
    line = recipe.describe()
    for part in ("flip 0.25", "crop area 0.4–0.9", "RandAugment on", "balanced_softmax", "class_balanced",
                 "exp:50"):
        assert part in line
    assert recipe.train_options() == {"loss": "balanced_softmax", "data_sampler": "class_balanced",
                                      "label_smoothing": 0.0}
    assert Recipe(long_tail="none").data_options() == Recipe(long_tail=None).data_options()
    assert Recipe(hflip=0).data_options() != Recipe().data_options()


@pytest.mark.parametrize(
    ("changes", "error", "match"),
    [
        ({"hflip": True}, TrainError, "probability"),
        ({"hflip": 1.5}, TrainError, "probability"),
        ({"crop_scale": (0.0, 1.0)}, TrainError, "crop_scale"),
        ({"crop_scale": (0.8, 0.5)}, TrainError, "crop_scale"),
        ({"crop_scale": (0.5, 1.2)}, TrainError, "crop_scale"),
        ({"crop_ratio": (2.0, 1.0)}, TrainError, "crop_ratio"),
        ({"loss": "focal"}, TrainError, "unknown loss"),
        ({"data_sampler": "square_root"}, TrainError, "data sampler"),
        ({"label_smoothing": 1.0}, TrainError, "label_smoothing"),
        ({"long_tail": "zipf"}, DataError, "long-tail"),
    ],
)
def test_bad_recipes_are_rejected(changes: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        Recipe().replace(**changes)
    with pytest.raises(error, match=match):
        Recipe.from_dict({**Recipe().to_dict(), **{k: list(v) if isinstance(v, tuple) else v
                                                   for k, v in changes.items()}})


def test_unknown_fields_and_boolean_flips_are_refused() -> None:
    with pytest.raises(TrainError, match="unknown recipe field"):
        Recipe.from_dict({"flip": 0.5})
    with pytest.raises(TrainError, match="probability"):
        TrainAugment(scale=(1, 1), ratio=(1, 1), hflip=True)  # True must not silently mean "always"


def _mirrored_share(p: float, n: int = 2000) -> float:
    """Share of ``n`` left-right asymmetric images that a whole-image crop with flip probability ``p`` mirrors."""
    x = torch.zeros(n, 3, 37, 37, dtype=torch.uint8)
    x[..., :18] = 255  # bright left half
    out = TrainTransform(32, TrainAugment(scale=(1, 1), ratio=(1, 1), hflip=p))(x)
    left, right = out[:, 0, :, :8].mean((1, 2)), out[:, 0, :, -8:].mean((1, 2))
    return float((right > left).float().mean())


def test_the_flip_is_a_probability() -> None:
    torch.manual_seed(0)
    assert _mirrored_share(0.0) == 0.0 and _mirrored_share(1.0) == 1.0
    n, p = 2000, 0.25
    sigma = math.sqrt(p * (1 - p) / n)  # binomial standard error of the share
    assert abs(_mirrored_share(p, n) - p) < 4 * sigma


# -- a data set whose classes are mirror images: arrows pointing left and right -----------------------

def _arrow(rng: np.random.Generator, size: int = 40) -> np.ndarray:
    """A left-pointing arrow on a noisy background, jittered symmetrically (so only its direction tells)."""
    img = np.full((size, size, 3), rng.integers(0, 90, 3), dtype=np.uint8)
    img = np.clip(img + rng.integers(0, 40, (size, size, 1)), 0, 255).astype(np.uint8)
    cy, cx = size // 2 + rng.integers(-4, 5), size // 2 + rng.integers(-3, 4)
    half, color = rng.integers(9, 14), rng.integers(180, 256, 3)
    img[cy - 1:cy + 2, cx - half:cx + half] = color  # the shaft
    for d in range(8):  # the head at the left end, opening to the right
        img[cy - d:cy + d + 1, cx - half + d] = color
    return img


@pytest.fixture(scope="module")
def arrows(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("arrows")
    rng = np.random.default_rng(0)
    for name in ("left", "right"):
        (root / name).mkdir()
    for i in range(64):
        Image.fromarray(_arrow(rng)).save(root / "left" / f"{i}.png")
        Image.fromarray(np.ascontiguousarray(_arrow(rng)[:, ::-1])).save(root / "right" / f"{i}.png")
    return root


def test_mirrored_classes_are_learned_without_the_flip_and_confused_with_it(arrows: Path) -> None:
    from search_space.spec import ArchSpec
    from trials.config import TrainConfig
    from trials.data import load_data
    from trials.evaluate import evaluate
    from trials.train import train

    spec = ArchSpec((1, 1, 1, 1), (0.25,) * 4, resolution=32, num_classes=2)
    config = TrainConfig(epochs=8, batch_size=16, lr=0.05, warmup_epochs=1, device="cpu", seed=0)
    scores = {}
    for p in (0.0, 0.5):
        data = load_data(arrows, 32, recipe=Recipe(hflip=p), selection_ratio=0.25, test_ratio=0.25)
        assert data.test_counts == [16, 16]
        trained = train(spec, data, dataclasses.replace(config, recipe=data.recipe)).model  # the data's recipe
        scores[p] = evaluate(trained, data.test, data.classes).balanced_acc
    assert scores[0.0] >= 0.9  # measured 1.0 for training seeds 0–3
    assert scores[0.5] <= 0.7  # a flipped "left" is a "right": chance is 0.5 (measured 0.34–0.5)
