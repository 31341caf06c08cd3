"""The training recipe: what full training and the accuracy proxy share, whatever the budget.

A :class:`Recipe` is the augmentation (flip probability, RandomResizedCrop area and aspect, RandAugment),
the loss, the data sampler, label smoothing and the long-tail profile. The budget (epochs, steps, subset
size, batch, learning rate) is not part of it: full training and the proxy differ only there. The
resolution is not part of it either: the architecture spec owns it, and the recipe is applied at the
spec's resolution (crop areas are fractions of the image, so they mean the same at any size).

Torch-free, so the command line and the study can name, check and record a recipe without importing torch.
Who applies which field: :func:`trials.data.load_data` the augmentation and the long tail
(:data:`DATA_FIELDS`, through :func:`trials.transforms.train_augment`); the trainer the loss, the sampler
and label smoothing (:data:`TRAIN_FIELDS`, from ``TrainConfig.recipe``).
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from trials.errors import TrainError
from trials.longtail import long_tail_name, parse_long_tail

#: Loss names (implemented in :mod:`trials.losses`).
LOSSES = ("ce", "eqlv2", "balanced_softmax", "logit_adjust")
#: How training batches are drawn from the training split.
DATA_SAMPLERS = ("none", "class_balanced")
#: Fields that :func:`trials.data.load_data` applies (they decide the training images and their pixels).
DATA_FIELDS = ("hflip", "crop_scale", "crop_ratio", "randaugment", "long_tail")
#: Fields that the trainer applies (it reads them from ``trials.config.TrainConfig.recipe``).
TRAIN_FIELDS = ("loss", "data_sampler", "label_smoothing")


@dataclass(frozen=True)
class Recipe:
    """How a model is trained, independent of the budget and of the resolution (see the module doc).

    hflip            probability of a horizontal flip per training image (0: never). 0.5 suits natural
                     images; turn it off for text, digits, traffic signs and anything whose classes come in
                     left/right pairs: a flipped "keep left" is a "keep right" with the wrong label.
    crop_scale       RandomResizedCrop area range, as fractions of the image. Default (0.6, 1): on small
                     images (tens of px) the usual (0.08, 1) or (0.25, 1) leave a crop of a few pixels that is
                     upsampled to the full size, and short CPU budgets cannot learn past such crops. On a
                     43-class long-tailed set of small sign images 0.25–1 (flip on) reached 0.48 balanced
                     accuracy and 0.6–1 (flip off) 0.69 with the same architecture; CIFAR's usual
                     pad-4-and-crop keeps at least ~77 % of the image, close to this range.
    crop_ratio       aspect-ratio range of the crop box (torchvision's default 3/4–4/3)
    randaugment      torchvision's RandAugment (2 ops, magnitude 9) before the crop; helps long budgets
    loss             one of :data:`LOSSES`
    data_sampler     one of :data:`DATA_SAMPLERS`
    label_smoothing  for the softmax losses, in [0, 1)
    long_tail        ``exp:IF``, ``seed`` or None/``none``: make the training split long-tailed
                     (:mod:`trials.longtail`); the selection and test splits are never subsampled

    Defaults per kind of data: :meth:`for_data`.
    """

    hflip: float = 0.5
    crop_scale: tuple[float, float] = (0.6, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    randaugment: bool = False
    loss: str = "ce"
    data_sampler: str = "none"
    label_smoothing: float = 0.1
    long_tail: str | None = None

    @classmethod
    def for_data(cls, path: str | os.PathLike[str] | None) -> Recipe:
        """The default recipe for a data set: :data:`DIGITS_RECIPE` for the embedded digits (``path=None``),
        else ``Recipe()`` (image folders: natural images, flip on, crop area 0.6–1, no long tail)."""
        return DIGITS_RECIPE if path is None else cls()

    def validate(self) -> None:
        """Raise :class:`~trials.errors.TrainError` naming the first invalid field (a bad long-tail profile:
        :class:`~trials.errors.DataError`)."""
        if isinstance(self.hflip, bool) or not (isinstance(self.hflip, (int, float)) and 0 <= self.hflip <= 1):
            raise TrainError(f"hflip {self.hflip!r} is not a probability in [0, 1]",
                             "use 0.5 for a random flip, 0 for none")
        _check_range("crop_scale", self.crop_scale, upper=1.0)
        _check_range("crop_ratio", self.crop_ratio, upper=math.inf)
        if not isinstance(self.randaugment, bool):
            raise TrainError(f"randaugment must be true or false, got {self.randaugment!r}")
        if self.loss not in LOSSES:
            raise TrainError(f"unknown loss {self.loss!r}", f"allowed: {', '.join(LOSSES)}")
        if self.data_sampler not in DATA_SAMPLERS:
            raise TrainError(f"unknown data sampler {self.data_sampler!r}", f"allowed: {', '.join(DATA_SAMPLERS)}")
        if not (isinstance(self.label_smoothing, (int, float)) and 0 <= self.label_smoothing < 1):
            raise TrainError(f"label_smoothing {self.label_smoothing!r} is out of range", "use a value in [0, 1)")
        parse_long_tail(self.long_tail)

    def replace(self, **changes: Any) -> Recipe:
        """A copy with ``changes`` (validated)."""
        out = replace(self, **changes)
        out.validate()
        return out

    def train_options(self) -> dict[str, Any]:
        """The fields the trainer applies (loss, data sampler, label smoothing), by name."""
        return {name: getattr(self, name) for name in TRAIN_FIELDS}

    def data_options(self) -> dict[str, Any]:
        """The fields :func:`trials.data.load_data` applies, JSON-style (equal for two recipes exactly when
        data loaded with them is augmented and long-tailed alike)."""
        body = {**self.to_dict(), "long_tail": long_tail_name(self.long_tail)}
        return {name: body[name] for name in DATA_FIELDS}

    def describe(self) -> str:
        """One line for people, e.g. ``flip 0.5, crop area 0.6–1, aspect 0.75–1.33, …``."""
        lo, hi = self.crop_scale
        r0, r1 = self.crop_ratio
        return (f"flip {self.hflip:g}, crop area {lo:g}–{hi:g}, aspect {r0:.2f}–{r1:.2f}, "
                f"RandAugment {'on' if self.randaugment else 'off'}, loss {self.loss}, "
                f"sampler {self.data_sampler}, label smoothing {self.label_smoothing:g}, "
                f"long tail {self.long_tail or 'none'}")

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (tuples become lists)."""
        body = asdict(self)
        body["crop_scale"], body["crop_ratio"] = list(self.crop_scale), list(self.crop_ratio)
        return body

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Recipe:
        """Inverse of :meth:`to_dict`; absent fields take the defaults, unknown ones raise, the result is validated."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise TrainError(f"unknown recipe field(s) {unknown}", f"known: {', '.join(sorted(known))}")
        body = dict(data)
        for name in ("crop_scale", "crop_ratio"):
            if name in body:
                body[name] = _pair(name, body[name])
        out = cls(**body)
        out.validate()
        return out


def _pair(name: str, value: Any) -> tuple[float, float]:
    try:
        lo, hi = value
        return float(lo), float(hi)
    except (TypeError, ValueError) as exc:
        raise TrainError(f"{name} must be two numbers LO, HI, got {value!r}") from exc


def _check_range(name: str, value: tuple[float, float], upper: float) -> None:
    lo, hi = _pair(name, value)
    if not (0 < lo <= hi <= upper and math.isfinite(hi)):
        limit = "1" if upper == 1.0 else "a finite number"
        raise TrainError(f"{name} {lo:g},{hi:g} is not a range 0 < LO ≤ HI ≤ {limit}",
                         "e.g. 0.6,1 for the crop area" if name == "crop_scale" else "e.g. 0.75,1.333")


#: The embedded digits: not mirror-symmetric (no flip), they fill their 8×8 frame (light crops, near-square
#: boxes), and they are made long-tailed with ``exp:10`` (140 → 14 training images per class by default).
DIGITS_RECIPE = Recipe(hflip=0.0, crop_scale=(0.6, 1.0), crop_ratio=(0.85, 1 / 0.85), long_tail="exp:10")
