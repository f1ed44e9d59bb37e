"""der-train --decode draft (issue 19): training decodes JPEGs the way Pillow's draft mode does for the resize it
needs, stores the mode in the card (so every runtime decodes the same way), and resume refuses a mode change."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from der_deploy.artifact.card import ModelCard
from der_deploy.datasets import open_dataset
from der_deploy.errors import CheckpointError
from der_deploy.images import preprocess, resampling
from der_deploy.train.checkpoint import load_checkpoint
from der_deploy.train.data import TrainImages, train_resize
from der_deploy.train.engine import TrainConfig, train

SIZE = (32, 32)


@pytest.fixture(scope="module")
def jpeg_voc(tmp_path_factory):
    from der_deploy.synth import generate

    return generate(tmp_path_factory.mktemp("decode") / "voc", classes=3, images=24, seed=5, size=160)


def _reference(path, card: ModelCard, seed: int, epoch: int, index: int) -> np.ndarray:
    """Transcription of the training augmentation on an image decoded with Pillow's own draft() (libjpeg's DCT
    scaling) to cover the training resize."""
    rng = np.random.default_rng((seed, epoch, index))
    rh, rw = train_resize(card.input_size)
    with Image.open(path) as im:
        im.draft("RGB", (rw, rh))
        img = im.convert("RGB")
    assert img.size[0] < 160, "draft did not shrink: the test would not tell the modes apart"
    img = img.resize((rw, rh), resampling(card.interpolation))
    h, w = card.input_size
    top, left = int(rng.integers(0, rh - h + 1)), int(rng.integers(0, rw - w + 1))
    img = img.crop((left, top, left + w, top + h))
    if rng.random() < 0.5:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return preprocess(img, card)


def test_training_images_follow_the_cards_decode_mode(jpeg_voc):
    ds = open_dataset(jpeg_voc, "trainval")
    draft = ModelCard(classes=list(ds.classes), arch="resnet18", input_size=SIZE, decode="draft")
    full = draft.replace(decode="full")
    a, b = TrainImages(ds, draft, seed=2), TrainImages(ds, full, seed=2)
    a.set_epoch(1)
    b.set_epoch(1)
    for i in range(4):
        got = a[i][0].numpy()
        np.testing.assert_array_equal(got, _reference(ds[i][0], draft, 2, 1, i))
        assert np.abs(got - b[i][0].numpy()).max() > 1e-3  # full decoding is a different image


def test_decode_mode_is_stored_and_resume_keeps_it(jpeg_voc, tmp_path):
    cfg = dict(arch="resnet18", input_size=SIZE, epochs=1, batch_size=8, lr=0.01, workers=0, seed=1)
    first = train(TrainConfig(data=jpeg_voc, output=tmp_path / "m.pt", decode="draft", **cfg))
    _, card = load_checkpoint(tmp_path / "m.pt")
    assert card.decode == "draft"
    with pytest.raises(CheckpointError, match="decode draft, this run has full"):
        train(TrainConfig(data=jpeg_voc, output=tmp_path / "m.pt", resume=first.last_path, **{**cfg, "epochs": 2}))
    with pytest.raises(Exception, match="unknown --decode 'thumb'"):
        TrainConfig(data=jpeg_voc, output=tmp_path / "x.pt", decode="thumb", **cfg).validate()
