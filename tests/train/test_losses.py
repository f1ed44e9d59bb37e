"""DER losses against plain loop transcriptions of the paper's equations (Eq. 4, 6, 7, 10, 15, 16)."""
from __future__ import annotations

import math

import pytest
import torch

from der_deploy.train.losses import classification_loss, der_loss, embedding_loss, ranking_loss
from der_deploy.train.model import DEROutput



def _targets():
    # Image 0: usual; 1: one -1 label; 2: empty S (all negative or ignored); 3: empty S̄; 4: single positive.
    return torch.tensor([
        [1, 0, 1, 0, 0],
        [1, -1, 0, 1, 0],
        [0, 0, -1, 0, 0],
        [1, 1, -1, 1, 1],
        [0, 0, 0, 1, 0],
    ], dtype=torch.float32)


def _sq(u, v):
    return sum((float(x) - float(y)) ** 2 for x, y in zip(u, v))


def _mean_vec(vectors):
    d = len(vectors[0])
    return [sum(float(v[i]) for v in vectors) / len(vectors) for i in range(d)]


def ref_cls(logits, targets):
    total = 0.0
    for b in range(logits.shape[0]):
        for c in range(logits.shape[1]):
            y, x = float(targets[b, c]), float(logits[b, c])
            if y < 0:
                continue
            p = 1.0 / (1.0 + math.exp(-x))
            total += -(y * math.log(p) + (1 - y) * math.log(1 - p))
    return total / logits.shape[0]


def ref_lce(a, targets):
    """Eq. 7, one value per image."""
    out = []
    for b in range(a.shape[0]):
        S = [c for c in range(a.shape[1]) if targets[b, c] == 1]
        Sbar = [k for k in range(a.shape[1]) if targets[b, k] == 0]
        if not S:
            out.append(0.0)
            continue
        abar = _mean_vec([a[b, j] for j in S])
        value = sum(_sq(a[b, j], abar) for j in S)
        value += sum(max(0.0, 1.0 - _sq(a[b, k], abar)) for k in Sbar)
        out.append(value)
    return out


def ref_lr(a, targets):
    """Eq. 10, one value per image."""
    out = []
    for b in range(a.shape[0]):
        S = [c for c in range(a.shape[1]) if targets[b, c] == 1]
        Sbar = [k for k in range(a.shape[1]) if targets[b, k] == 0]
        if not S or not Sbar:
            out.append(0.0)
            continue
        abar = _mean_vec([a[b, j] for j in S])
        far = max(_sq(a[b, j], abar) for j in S)
        near = min(_sq(a[b, k], abar) for k in Sbar)
        out.append(max(0.0, 1.0 + far - near))
    return out


@pytest.mark.parametrize("scale", [0.3, 1.0])
def test_embedding_and_ranking_match_loops(scale):
    torch.manual_seed(0)
    t = _targets()
    a = torch.randn(5, 5, 7) * scale  # small scale: hinge terms active; large: mostly inactive
    per = embedding_loss(a, t, reduction="none")
    assert per.shape == (5,)
    assert per.tolist() == pytest.approx(ref_lce(a, t), rel=1e-5, abs=1e-6)
    assert float(embedding_loss(a, t)) == pytest.approx(sum(ref_lce(a, t)) / 5, rel=1e-5)
    assert float(per[2]) == 0.0  # empty S contributes 0
    per = ranking_loss(a, t, reduction="none")
    assert per.tolist() == pytest.approx(ref_lr(a, t), rel=1e-5, abs=1e-6)
    assert float(per[2]) == 0.0 and float(per[3]) == 0.0  # empty S, empty S̄
    assert float(ranking_loss(a, t)) == pytest.approx(sum(ref_lr(a, t)) / 5, rel=1e-5)


def test_ranking_hinge_is_active_when_order_is_wrong():
    # One positive far from ā is impossible with |S|=1 (distance 0); use two positives far apart.
    a = torch.tensor([[[0.0, 0.0], [4.0, 0.0], [2.0, 0.1]]])
    t = torch.tensor([[1.0, 1.0, 0.0]])
    # ā = (2, 0); far = 4; near = 0.01 -> 1 + 4 - 0.01
    assert float(ranking_loss(a, t)) == pytest.approx(4.99, rel=1e-5)
    assert ref_lr(a, t)[0] == pytest.approx(4.99)


def test_classification_loss_matches_loop_and_masks_ignored():
    torch.manual_seed(1)
    t = _targets()
    logits = torch.randn(5, 5) * 3
    assert float(classification_loss(logits, t)) == pytest.approx(ref_cls(logits, t), rel=1e-5)
    # Changing a logit of an ignored (-1) label must not change the loss.
    moved = logits.clone()
    moved[1, 1] += 10
    assert float(classification_loss(moved, t)) == pytest.approx(float(classification_loss(logits, t)), rel=1e-6)
    # Numerically stable for huge logits (log(sigmoid) would be -inf in float32).
    big = torch.full((1, 2), 200.0)
    value = classification_loss(big, torch.tensor([[0.0, 1.0]]))
    assert math.isfinite(float(value)) and float(value) == pytest.approx(200.0, rel=1e-4)


def test_eq4_equals_size_of_S_times_eq6():
    torch.manual_seed(2)
    for n in (1, 2, 3, 6):
        a = torch.randn(n, 9, dtype=torch.float64)
        eq4 = sum(_sq(a[j], a[k]) for j in range(n) for k in range(j))
        abar = a.mean(dim=0)
        eq6 = sum(_sq(a[j], abar) for j in range(n))
        assert eq4 == pytest.approx(n * eq6, rel=1e-10, abs=1e-12)
        # and the library's first term of Eq. 7 is Eq. 6 (all labels positive: no hinge term)
        lib = float(embedding_loss(a.unsqueeze(0), torch.ones(1, n, dtype=torch.float64), reduction="none")[0])
        assert lib == pytest.approx(eq6, rel=1e-10, abs=1e-12)


def test_der_loss_combines_parts_and_gradients_flow():
    torch.manual_seed(3)
    t = _targets()
    logits = torch.randn(5, 5, requires_grad=True)
    emb = (torch.randn(5, 5, 4) * 0.3).requires_grad_(True)
    out = DEROutput(logits, logits, logits, None, emb)
    parts = der_loss(out, t, alpha=0.5, beta=0.05)
    expected = ref_cls(logits.detach(), t) + 0.5 * sum(ref_lce(emb.detach(), t)) / 5 + 0.05 * sum(ref_lr(emb.detach(), t)) / 5
    total, cls, lce, lr = (p.detach() for p in parts)
    assert float(total) == pytest.approx(expected, rel=1e-5)
    assert float(total) == pytest.approx(float(cls + 0.5 * lce + 0.05 * lr), rel=1e-6)
    for part in (parts.cls, parts.lce, parts.lr):
        g_logits, g_emb = torch.autograd.grad(part, (logits, emb), allow_unused=True, retain_graph=True)
        grads = [g for g in (g_logits, g_emb) if g is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads)
        assert any(g.abs().sum() > 0 for g in grads)
    # images with empty S / empty S̄ get no gradient from the ranking loss
    (g,) = torch.autograd.grad(ranking_loss(emb, t), emb)
    assert torch.isfinite(g).all() and g[2].abs().sum() == 0 and g[3].abs().sum() == 0


def test_baseline_has_only_classification_loss():
    logits = torch.randn(3, 5)
    t = _targets()[:3]
    parts = der_loss(DEROutput(logits, logits, None, None, None), t, alpha=0.5, beta=0.05)
    assert float(parts.total) == pytest.approx(float(classification_loss(logits, t)))
    assert float(parts.lce) == 0.0 and float(parts.lr) == 0.0


def test_bad_reduction():
    with pytest.raises(ValueError, match="reduction"):
        embedding_loss(torch.zeros(1, 2, 3), torch.ones(1, 2), reduction="avg")
