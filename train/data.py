"""Torch views of a der_deploy dataset: paper §IV-B train augmentation and the core's test-time preprocessing.

Decode errors travel as data (``error`` field) rather than exceptions: a DataLoader worker re-raises a
foreign exception as a RuntimeError with a traceback dump, which would hide the clear ImageError line.
Augmentation randomness is drawn from (seed, epoch, index), so it is the same with 0 or N workers, with
one or N processes, and after ``--resume``.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from PIL import Image

from der_deploy.artifact.card import ModelCard
from der_deploy.errors import ImageError
from der_deploy.images import load_and_preprocess, load_image, preprocess, resampling

# §IV-B: "resized to 512×512 and randomly cropped into 448×448"; other input sizes keep the ratio per side.
RESIZE_RATIO = 512 / 448


class Batch(NamedTuple):
    images: torch.Tensor  # N×3×H×W float32, normalised
    targets: torch.Tensor  # N×C float32 of 1/0/-1
    indices: torch.Tensor  # N int64: positions in the dataset
    errors: list  # [(path, reason)] of images that failed to decode


def train_resize(input_size: tuple[int, int]) -> tuple[int, int]:
    return round(input_size[0] * RESIZE_RATIO), round(input_size[1] * RESIZE_RATIO)


class _Base(torch.utils.data.Dataset):
    def __init__(self, dataset, card: ModelCard):
        self.dataset = dataset
        self.card = card

    def __len__(self) -> int:
        return len(self.dataset)

    def _image(self, path, index: int) -> np.ndarray:
        raise NotImplementedError

    def __getitem__(self, index: int):
        path, target = self.dataset[index]
        target = torch.from_numpy(np.asarray(target, dtype=np.float32))
        try:
            image = torch.from_numpy(self._image(path, index))
            error = None
        except ImageError as err:
            h, w = self.card.input_size
            image, error = torch.zeros(3, h, w), (str(err.path), err.reason)
        return image, target, index, error


class TrainImages(_Base):
    """Resize to input × 512/448, random crop to the input size, random horizontal flip, normalise (card)."""

    def __init__(self, dataset, card: ModelCard, seed: int = 0):
        super().__init__(dataset, card)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _image(self, path, index: int) -> np.ndarray:
        rng = np.random.default_rng((self.seed, self.epoch, index))
        h, w = self.card.input_size
        rh, rw = train_resize((h, w))
        # A draft card shrinks JPEGs on load here too (to cover the resize), so training sees what inference sees.
        img = load_image(path, draft=(rh, rw) if self.card.decode == "draft" else None)
        img = img.resize((rw, rh), resampling(self.card.interpolation))
        top, left = int(rng.integers(0, rh - h + 1)), int(rng.integers(0, rw - w + 1))
        img = img.crop((left, top, left + w, top + h))
        if rng.random() < 0.5:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return preprocess(img, self.card)  # already H×W: only the card's scaling/normalisation applies


class EvalImages(_Base):
    """The core's test-time preprocessing, exactly what the runtimes use."""

    def _image(self, path, index: int) -> np.ndarray:
        return load_and_preprocess(path, self.card)


def collate(items) -> Batch:
    images, targets, indices, errors = zip(*items)
    return Batch(torch.stack(images), torch.stack(targets), torch.tensor(indices, dtype=torch.int64),
                 [e for e in errors if e is not None])


def check_batch(batch: Batch) -> Batch:
    """Raise the first decode error of a batch as the ImageError it was."""
    if batch.errors:
        path, reason = batch.errors[0]
        raise ImageError(path, f"{reason} (training needs every image readable; fix or remove it from the split)")
    return batch


def make_loader(images: _Base, batch_size: int, *, sampler=None, workers: int = 0, drop_last: bool = False):
    return torch.utils.data.DataLoader(
        images, batch_size=batch_size, sampler=sampler, shuffle=False, num_workers=workers,
        collate_fn=collate, drop_last=drop_last, persistent_workers=False,
    )
