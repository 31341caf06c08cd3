"""Pixels: decode once into small uint8 squares, augment whole batches on tensors, normalize.

Every image is stored as a ``(3, S, S)`` uint8 square, ``S = round(R · 256/224)`` for training
resolution ``R`` (37 for 32 px, 128 for 112 px): the central square of the image resized to ``S``,
i.e. the seed's "resize shorter side, center crop" minus the final crop. From that store

- evaluation (selection, test, and train when it is evaluated) takes the central ``R × R`` crop — the seed's
  resize-to-``S`` + center-crop-``R`` validation transform;
- training takes a RandomResizedCrop (area ``scale``, aspect ``ratio``) resampled to ``R × R`` plus a
  horizontal flip with probability ``hflip``, computed for a whole batch at once with one ``affine_grid``
  + ``grid_sample`` (per image: its own box and flip), about 6× faster than per-image torchvision ops on
  2 CPU cores; :func:`train_augment` is the one place that turns a :class:`trials.recipe.Recipe` into
  these settings;
  ``randaugment=True`` first applies torchvision's ``RandAugment`` (2 ops, magnitude 9) to groups of
  ``RANDAUGMENT_GROUP`` images that share the drawn ops (per-image RandAugment costs ~0.65 ms, a group
  of 8 ~0.07 ms per image).

Datasets here implement ``__getitems__``, so a ``DataLoader`` fetches and augments a whole batch in one
call; ``__getitem__`` returns one ``(float (3, R, R), int)`` item like any torchvision dataset.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms import v2

from trials.errors import TrainError
from trials.recipe import Recipe

MEAN = (0.485, 0.456, 0.406)  # ImageNet statistics, as the seed's training scripts use
STD = (0.229, 0.224, 0.225)
CROP_FRACTION = 224 / 256
RANDAUGMENT_GROUP = 8


def store_size(resolution: int) -> int:
    """Side of the stored uint8 square for training resolution ``resolution`` (``round(R · 256/224)``)."""
    return round(resolution / CROP_FRACTION)


def to_rgb(img: Image.Image) -> Image.Image:
    """Grayscale, palette (with or without transparency), RGBA, CMYK … → RGB (alpha is dropped)."""
    if img.mode == "RGB":
        return img
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("I", "F") or img.mode.startswith("I;16"):  # 16/32-bit gray: scale 16-bit data to 8 bits
        arr = np.asarray(img, dtype=np.float64)
        arr = arr * (255 / 65535) if arr.size and arr.max() > 255 else arr
        img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "L")
    return img.convert("RGB")


def square_pixels(img: Image.Image, size: int) -> np.ndarray:
    """The central square of ``img`` resized to ``size × size``, as a uint8 array ``(size, size, 3)``."""
    img.draft("RGB", (size, size))  # JPEG: decode at a reduced scale when the image is ≥ 2× larger
    img = to_rgb(img)
    w, h = img.size
    m = min(w, h)
    box = ((w - m) / 2, (h - m) / 2, (w + m) / 2, (h + m) / 2)
    img = img.resize((size, size), Image.Resampling.BILINEAR, box=box)
    return np.asarray(img, dtype=np.uint8)


def load_square(path: str | Path, size: int) -> np.ndarray:
    """Decode the image file at ``path`` into a uint8 ``(size, size, 3)`` square (see :func:`square_pixels`).

    Raises ``OSError``/``ValueError``/``PIL.UnidentifiedImageError`` for unreadable files; callers skip them.
    """
    with Image.open(path) as img:
        return square_pixels(img, size)


def normalize(x: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    """Float pixels in 0..255 ``(B, 3, H, W)`` → normalized with :data:`MEAN` / :data:`STD`."""
    std = torch.tensor(STD, dtype=x.dtype).view(1, 3, 1, 1) * 255.0
    mean = torch.tensor(MEAN, dtype=x.dtype).view(1, 3, 1, 1) * 255.0
    return x.sub_(mean).div_(std) if inplace else (x - mean) / std


@dataclass(frozen=True)
class TrainAugment:
    """Training augmentation: RandomResizedCrop area ``scale`` and aspect ``ratio``, flip probability
    ``hflip``, RandAugment. Built from a recipe by :func:`train_augment`."""

    scale: tuple[float, float]
    ratio: tuple[float, float]
    hflip: float
    randaugment: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.hflip, bool) or not 0 <= self.hflip <= 1:  # True would silently mean "always"
            raise TrainError(f"hflip {self.hflip!r} is not a probability in [0, 1]",
                             "use 0.5 for a random flip, 0 for none")

    def to_dict(self) -> dict[str, object]:
        """JSON-able form (for reports)."""
        return {"scale": list(self.scale), "ratio": list(self.ratio), "hflip": self.hflip,
                "randaugment": self.randaugment}


def train_augment(recipe: Recipe) -> TrainAugment:
    """The augmentation a recipe asks for (the only mapping from :class:`~trials.recipe.Recipe` fields)."""
    recipe.validate()
    (s0, s1), (r0, r1) = recipe.crop_scale, recipe.crop_ratio
    return TrainAugment(scale=(float(s0), float(s1)), ratio=(float(r0), float(r1)), hflip=float(recipe.hflip),
                        randaugment=recipe.randaugment)


class EvalTransform:
    """uint8 ``(B, 3, S, S)`` → the central ``R × R`` crop, normalized float ``(B, 3, R, R)``."""

    def __init__(self, resolution: int) -> None:
        self.resolution = resolution

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-1]
        o = (size - self.resolution) // 2
        crop = x[..., o:o + self.resolution, o:o + self.resolution]
        return normalize(crop.to(torch.float32, copy=True), inplace=True)


class TrainTransform:
    """uint8 ``(B, 3, S, S)`` → per-image random resized crop + flip (+ RandAugment), normalized float.

    ``augment=None`` is the default recipe's augmentation (``train_augment(Recipe())``).
    """

    def __init__(self, resolution: int, augment: TrainAugment | None = None) -> None:
        self.resolution = resolution
        self.augment = augment if augment is not None else train_augment(Recipe())
        self._randaugment = v2.RandAugment() if augment.randaugment else None

    def boxes(self, n: int) -> torch.Tensor:
        """``n`` crop boxes ``(cx, cy, w, h)`` as fractions of the side, drawn like torchvision's
        RandomResizedCrop (10 tries per image, else the whole image), from torch's global RNG."""
        tries = 10
        lo, hi = self.augment.scale
        area = torch.empty(n, tries).uniform_(lo, hi)
        log_ratio = torch.empty(n, tries).uniform_(math.log(self.augment.ratio[0]), math.log(self.augment.ratio[1]))
        aspect = torch.exp(log_ratio)
        w, h = torch.sqrt(area * aspect), torch.sqrt(area / aspect)
        ok = (w <= 1) & (h <= 1)
        first = torch.where(ok.any(1), ok.float().argmax(1), torch.full((n,), -1))
        rows = torch.arange(n)
        w = torch.where(first >= 0, w[rows, first.clamp(min=0)], torch.ones(n))
        h = torch.where(first >= 0, h[rows, first.clamp(min=0)], torch.ones(n))
        cx = w / 2 + torch.rand(n) * (1 - w)
        cy = h / 2 + torch.rand(n) * (1 - h)
        return torch.stack([cx, cy, w, h], 1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        if self._randaugment is not None:
            x = torch.cat([self._randaugment(group) for group in x.split(RANDAUGMENT_GROUP)])
        cx, cy, w, h = self.boxes(n).unbind(1)
        sign = torch.ones(n)
        if self.augment.hflip > 0:  # no draw at 0: the RNG stream stays that of a flip-free recipe
            sign = torch.where(torch.rand(n) < self.augment.hflip, -1.0, 1.0)
        theta = torch.zeros(n, 2, 3)  # output coords in [-1, 1] → input coords in [-1, 1]
        theta[:, 0, 0] = w * sign
        theta[:, 0, 2] = 2 * cx - 1
        theta[:, 1, 1] = h
        theta[:, 1, 2] = 2 * cy - 1
        r = self.resolution
        grid = F.affine_grid(theta, [n, 3, r, r], align_corners=False)
        out = F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)
        return normalize(out, inplace=True)


Transform = EvalTransform | TrainTransform


class _BatchDataset(Dataset):
    """Shared item logic: subclasses give uint8 squares for item positions; the transform runs per batch."""

    transform: Transform
    labels: torch.Tensor

    def _pixels(self, positions: Sequence[int]) -> torch.Tensor:
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} images")
        return self.transform(self._pixels([i % len(self)]))[0], int(self.labels[i])

    def __getitems__(self, positions: Sequence[int]) -> list[tuple[torch.Tensor, int]]:
        """A whole batch in one call (``DataLoader`` uses this): one decode/augment pass for the batch."""
        x = self.transform(self._pixels(list(positions)))
        labels = self.labels[list(positions)].tolist()
        return list(zip(x.unbind(0), labels))

    @property
    def targets(self) -> list[int]:
        """Labels as a list (torchvision's ImageFolder attribute name)."""
        return self.labels.tolist()

    @property
    def resolution(self) -> int:
        """Output side in px."""
        return self.transform.resolution


class TensorImageDataset(_BatchDataset):
    """Images decoded once, held in memory: ``store`` uint8 ``(N, 3, S, S)`` (any strides; the decoder
    fills it channels-last), items ``index`` of it.

    Train, val and the train-as-evaluated datasets share one store (a class in both splits is stored once).
    """

    def __init__(self, store: torch.Tensor, index: torch.Tensor, labels: torch.Tensor, transform: Transform) -> None:
        self.store, self.index, self.labels, self.transform = store, index, labels, transform

    def _pixels(self, positions: Sequence[int]) -> torch.Tensor:
        return self.store[self.index[list(positions)]]

    def with_transform(self, transform: Transform) -> TensorImageDataset:
        """The same images with another transform (no copy)."""
        return TensorImageDataset(self.store, self.index, self.labels, transform)


class ImagePathDataset(_BatchDataset):
    """Lazy on-disk fallback for datasets too big for memory: decodes each file on access.

    A file that fails to decode here (it passed the header check) raises ``OSError`` naming the file.
    """

    def __init__(self, paths: Sequence[str], labels: torch.Tensor, size: int, transform: Transform) -> None:
        self.paths, self.labels, self.size, self.transform = list(paths), labels, size, transform

    def _pixels(self, positions: Sequence[int]) -> torch.Tensor:
        out = []
        for p in positions:
            try:
                out.append(load_square(self.paths[p], self.size))
            except (OSError, ValueError) as exc:
                raise OSError(f"cannot decode {self.paths[p]}: {exc}") from exc
        return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2)  # (B, 3, S, S) uint8

    def with_transform(self, transform: Transform) -> ImagePathDataset:
        """The same files with another transform."""
        return ImagePathDataset(self.paths, self.labels, self.size, transform)
