"""D + triplet loss (Table VI): the vectorised loss against a loop transcription, gradients, a training step."""
from __future__ import annotations

import pytest
import torch

from der_deploy.train.engine import TrainConfig, build_model
from der_deploy.train.losses import der_loss, triplet_loss
from der_deploy.train.model import DER


def _sq(u, v):
    return sum((float(x) - float(y)) ** 2 for x, y in zip(u, v))


def ref_triplet(a, targets, margin):
    """The definition, looped: label vectors of positive labels; anchor/positive = same class in different
    images; negative = another class, the nearest semi-hard one, else the hardest (nearest)."""
    items = [(i, c) for i in range(a.shape[0]) for c in range(a.shape[1]) if targets[i, c] == 1]
    terms = []
    for (i, c) in items:
        for (j, c2) in items:
            if c2 != c or j == i:
                continue
            d_ap = _sq(a[i, c], a[j, c])
            negs = [_sq(a[i, c], a[k, c3]) for (k, c3) in items if c3 != c]
            if not negs:
                continue
            semi = [d for d in negs if d_ap < d < d_ap + margin]
            d_an = min(semi) if semi else min(negs)
            terms.append(max(0.0, d_ap - d_an + margin))
    return sum(terms) / len(terms) if terms else 0.0


def _targets(B, C, gen):
    t = (torch.rand(B, C, generator=gen) < 0.5).float()
    t[torch.rand(B, C, generator=gen) < 0.1] = -1  # ignored labels are no label vectors
    return t


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("margin", [0.5, 1.0, 4.0])
def test_matches_loop_transcription(seed, margin):
    gen = torch.Generator().manual_seed(seed)
    B, C, D = 6, 4, 5
    # Scale so that distances spread around the margin: semi-hard, hard and easy negatives all occur.
    a = torch.randn(B, C, D, generator=gen, dtype=torch.float64) * 0.4
    t = _targets(B, C, gen)
    assert float(triplet_loss(a, t, margin)) == pytest.approx(ref_triplet(a, t, margin), rel=1e-9, abs=1e-12)


def test_semi_hard_rule_is_exercised_both_ways():
    # One anchor/positive pair (class 0 in images 0 and 1, d_ap = 1); negatives of class 1 at d_an = 0.25 (hard)
    # and 1.44 (semi-hard with margin 1): the semi-hard one is chosen -> 1 - 1.44 + 1.
    a = torch.zeros(2, 2, 1, dtype=torch.float64)
    a[1, 0, 0], a[0, 1, 0], a[1, 1, 0] = 1.0, 0.5, -1.2
    t = torch.ones(2, 2)
    # pairs: (0,0)->(1,0) d_ap=1, negs from a00=0: 0.25, 1.44; (1,0)->(0,0): negs from 1: 0.25, 4.84;
    # (0,1)->(1,1) d_ap=2.89, negs from .5: .25, .25 -> hardest .25; (1,1)->(0,1): negs from -1.2: 1.44, 4.84
    value = float(triplet_loss(a, t, 1.0))
    assert value == pytest.approx(ref_triplet(a, t, 1.0))
    expected = [1 - 1.44 + 1, 1 - 0.25 + 1, 2.89 - 0.25 + 1, max(0.0, 2.89 - 4.84 + 1)]
    # second pair has no semi-hard negative (0.25 < 1, 4.84 > 2): hardest 0.25; last: 4.84 > 3.89: hardest 1.44
    expected[3] = max(0.0, 2.89 - 1.44 + 1)
    assert value == pytest.approx(sum(expected) / 4)


def test_no_pairs_or_no_negatives_give_zero_with_graph():
    a = torch.randn(3, 3, 4, requires_grad=True)
    only_one_class = torch.tensor([[1.0, 0, 0], [1, 0, 0], [1, -1, 0]])
    single_images = torch.tensor([[1.0, 1, 0], [0, 0, 0], [0, 0, 0]])
    for t in (only_one_class, single_images, torch.zeros(3, 3)):
        value = triplet_loss(a, t)
        assert float(value.detach()) == 0.0
        value.backward()  # still part of the graph (DDP needs every rank to backward)


def test_gradients_flow():
    gen = torch.Generator().manual_seed(7)
    a = (torch.randn(5, 4, 6, generator=gen) * 0.3).requires_grad_(True)
    t = torch.tensor([[1.0, 1, 0, 0], [1, 0, 1, 0], [0, 1, 1, 1], [1, 0, 0, 1], [0, 0, 0, 0]])
    (g,) = torch.autograd.grad(triplet_loss(a, t), a)
    assert torch.isfinite(g).all() and g.abs().sum() > 0
    assert g[4].abs().sum() == 0 and g[0, 2:].abs().sum() == 0  # no label vectors there


def test_der_loss_triplet_replaces_eq7_and_eq10():
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(4, 3, generator=gen)
    emb = torch.randn(4, 3, 5, generator=gen) * 0.3
    t = torch.tensor([[1.0, 0, 1], [1, 1, 0], [0, 1, 1], [1, 0, 0]])
    from der_deploy.train.model import DEROutput
    out = DEROutput(logits, logits, logits, None, emb)
    parts = der_loss(out, t, alpha=0.7, beta=0.05, embed_loss="triplet", margin=0.5)
    tri = ref_triplet(emb, t, 0.5)
    assert float(parts.lce) == pytest.approx(tri, rel=1e-5) and float(parts.lr) == 0.0
    assert float(parts.total) == pytest.approx(float(parts.cls) + 0.7 * tri, rel=1e-5)
    with pytest.raises(ValueError, match="embed loss"):
        der_loss(out, t, embed_loss="contrastive")


def test_training_step_with_triplet(tmp_path):
    cfg = TrainConfig(data=tmp_path, output=tmp_path / "m.pt", arch="resnet18", input_size=(64, 64),
                      embed_loss="triplet", triplet_margin=0.5)
    cfg.validate()
    assert cfg.to_dict()["embed_loss"] == "triplet" and cfg.to_dict()["triplet_margin"] == 0.5
    torch.manual_seed(0)
    model = build_model(cfg, 3).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.randn(4, 3, 64, 64)
    t = torch.tensor([[1.0, 0, 1], [1, 1, 0], [0, 1, 1], [1, 0, 0]])
    parts = der_loss(model(x), t, alpha=cfg.alpha, embed_loss=cfg.embed_loss, margin=cfg.triplet_margin)
    opt.zero_grad()
    parts.total.backward()
    assert model.embed[0].weight.grad.abs().sum() > 0  # f_embed is trained by the triplet loss
    before = model.embed[0].weight.detach().clone()
    opt.step()
    assert not torch.equal(before, model.embed[0].weight)


def test_cli_flags(tmp_path):
    from click.testing import CliRunner

    from der_deploy.cli.train import main

    result = CliRunner().invoke(main, [str(tmp_path), "-o", str(tmp_path / "m.pt"), "--embed-loss", "x"])
    assert result.exit_code != 0 and "embed-loss" in result.output
    result = CliRunner().invoke(main, ["--help"])
    assert "--triplet-margin" in result.output and "--embed-loss" in result.output
