"""Metrics vs scikit-learn and vs plain-loop transcriptions of Eq. 17 and §IV-A."""
from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, precision_score, recall_score

from der_deploy.metrics import (
    average_precision,
    best_f1_thresholds,
    mean_average_precision,
    multilabel_scores,
    per_class_scores,
    predict_labels,
)


# --- independent references --------------------------------------------------------------------------------

def eq17_loop(scores, targets, c):
    """Eq. 17 literally: sum_n P(n) * (R(n) - R(n-1)) over the ranked, non-ignored list (no ties in input)."""
    items = [(scores[i][c], targets[i][c]) for i in range(len(scores)) if targets[i][c] != -1]
    items.sort(key=lambda x: -x[0])
    n_rel = sum(1 for _, y in items if y == 1)
    if n_rel == 0:
        return math.nan
    ap, tp, prev_recall = 0.0, 0, 0.0
    for n, (_, y) in enumerate(items, start=1):
        tp += y == 1
        precision, recall = tp / n, tp / n_rel
        ap += precision * (recall - prev_recall)
        prev_recall = recall
    return ap


def section4a_loop(probs, targets, thr, top_k=None):
    """§IV-A formulas with Python loops; thr is a per-class list."""
    n, c = len(probs), len(probs[0])
    Nc, Np, Ng = [0] * c, [0] * c, [0] * c
    for i in range(n):
        top = sorted(range(c), key=lambda j: (-probs[i][j], j))[: top_k or c]
        for j in range(c):
            if targets[i][j] == -1:
                continue
            predicted = probs[i][j] >= thr[j] and j in top
            Ng[j] += targets[i][j] == 1
            Np[j] += predicted
            Nc[j] += predicted and targets[i][j] == 1
    f = lambda a, b: a / b if b else 0.0
    cp = sum(f(Nc[j], Np[j]) for j in range(c)) / c
    cr = sum(f(Nc[j], Ng[j]) for j in range(c)) / c
    op, or_ = f(sum(Nc), sum(Np)), f(sum(Nc), sum(Ng))
    return dict(CP=cp, CR=cr, CF1=f(2 * cp * cr, cp + cr), OP=op, OR=or_, OF1=f(2 * op * or_, op + or_))


def data(seed, n=60, c=7, ties=False, ignore=0.0):
    rng = np.random.default_rng(seed)
    targets = (rng.random((n, c)) < 0.35).astype(np.int8)
    scores = rng.random((n, c)) + 0.6 * targets  # informative but imperfect
    if ties:
        scores = np.round(scores * 4) / 4  # a handful of distinct values per class
    if ignore:
        targets[rng.random((n, c)) < ignore] = -1
    return scores, targets


# --- average precision ------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("ties", [False, True])
def test_ap_matches_sklearn(seed, ties):
    scores, targets = data(seed, ties=ties)
    if ties:
        assert len(np.unique(scores[:, 0])) < len(scores) / 3  # the ties are real
    ap = average_precision(scores, targets)
    ref = [average_precision_score(targets[:, c], scores[:, c]) for c in range(targets.shape[1])]
    np.testing.assert_allclose(ap, ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_ap_with_ignored_cells_matches_sklearn_on_kept_cells(seed):
    scores, targets = data(seed, ties=True, ignore=0.2)
    ap = average_precision(scores, targets)
    for c in range(targets.shape[1]):
        keep = targets[:, c] != -1
        assert ap[c] == pytest.approx(average_precision_score(targets[keep, c], scores[keep, c]), abs=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_ap_matches_eq17_loop(seed):
    scores, targets = data(seed, ignore=0.15)  # continuous scores: no ties
    ap = average_precision(scores, targets)
    ref = [eq17_loop(scores.tolist(), targets.tolist(), c) for c in range(targets.shape[1])]
    np.testing.assert_allclose(ap, ref, rtol=0, atol=1e-12)


def test_ap_hand_example_and_ignored_removed_before_ranking():
    # ranking: pos, neg, pos -> (1/1 + 2/3) / 2
    s = np.array([[0.9], [0.8], [0.7], [0.95]])
    t = np.array([[1], [0], [1], [-1]])  # the -1 outranks everything but must not count
    assert average_precision(s, t)[0] == pytest.approx((1 + 2 / 3) / 2)
    t_neg = np.array([[1], [0], [1], [0]])
    assert average_precision(s, t_neg)[0] == pytest.approx((1 / 2 + 2 / 4) / 2)


def test_ap_ties_are_one_threshold_and_order_independent():
    s = np.array([[0.5], [0.5], [0.5], [0.1]])
    t1 = np.array([[1], [0], [0], [1]])
    t2 = np.array([[0], [0], [1], [1]])
    # tied block of 3 with 1 positive: precision 1/3, then 2/4
    assert average_precision(s, t1)[0] == pytest.approx((1 / 3 + 2 / 4) / 2)
    assert average_precision(s, t2)[0] == average_precision(s, t1)[0]


def test_ap_perfect_and_nan_for_no_positive():
    s = np.array([[0.9, 0.2], [0.1, 0.3], [0.8, 0.4]])
    t = np.array([[1, 0], [0, -1], [1, 0]])
    ap = average_precision(s, t)
    assert ap[0] == 1.0
    assert math.isnan(ap[1])


def test_map_ignores_nan_classes():
    scores, targets = data(3)
    targets[:, 2] = 0
    targets[:5, 4] = -1
    targets[5:, 4] = 0
    ap = average_precision(scores, targets)
    assert np.isnan(ap[[2, 4]]).all() and np.isfinite(np.delete(ap, [2, 4])).all()
    assert mean_average_precision(scores, targets) == pytest.approx(np.mean(np.delete(ap, [2, 4])))
    assert 0.0 <= mean_average_precision(scores, targets) <= 1.0
    with pytest.raises(ValueError, match="no class has a positive"):
        mean_average_precision(scores, np.zeros_like(targets))


@pytest.mark.parametrize(
    "scores, targets, match",
    [
        (np.zeros((3, 2)), np.zeros((3, 3)), "does not match"),
        (np.zeros(3), np.zeros(3), "2-D"),
        (np.zeros((0, 2)), np.zeros((0, 2)), "empty"),
        (np.array([[np.nan, 0.1]]), np.array([[1, 0]]), "NaN"),
        (np.array([[0.2, 0.1]]), np.array([[2, 0]]), "found \\[2\\]"),
    ],
)
def test_ap_validation(scores, targets, match):
    with pytest.raises(ValueError, match=match):
        average_precision(scores, targets)


# --- §IV-A scores ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("top_k", [None, 1, 3])
def test_multilabel_scores_match_loop(seed, top_k):
    probs, targets = data(seed, ties=(seed % 2 == 0), ignore=0.1)
    probs = probs / probs.max()
    thr = [0.5] * probs.shape[1]
    got = multilabel_scores(probs, targets, 0.5, top_k=top_k)
    ref = section4a_loop(probs.tolist(), targets.tolist(), thr, top_k)
    assert set(got) == {"CP", "CR", "CF1", "OP", "OR", "OF1"}
    for k in ref:
        assert got[k] == pytest.approx(ref[k], abs=1e-12), k
        assert 0.0 <= got[k] <= 1.0


@pytest.mark.parametrize("seed", range(4))
def test_multilabel_scores_match_sklearn(seed):
    probs, targets = data(seed, c=6)
    probs = probs / probs.max()
    probs[:, 5] = 0.0  # a class that is never predicted: precision 0 by convention
    got = multilabel_scores(probs, targets, 0.5)
    pred = (probs >= 0.5).astype(int)
    kw = dict(zero_division=0)
    cp = precision_score(targets, pred, average="macro", **kw)
    cr = recall_score(targets, pred, average="macro", **kw)
    assert got["CP"] == pytest.approx(cp, abs=1e-12)
    assert got["CR"] == pytest.approx(cr, abs=1e-12)
    assert got["OP"] == pytest.approx(precision_score(targets, pred, average="micro", **kw), abs=1e-12)
    assert got["OR"] == pytest.approx(recall_score(targets, pred, average="micro", **kw), abs=1e-12)
    assert got["CF1"] == pytest.approx(2 * cp * cr / (cp + cr), abs=1e-12)


def test_micro_scores_with_ignored_cells_match_sklearn_on_valid_cells():
    probs, targets = data(7, ignore=0.25)
    probs = probs / probs.max()
    got = multilabel_scores(probs, targets, 0.5)
    valid = targets != -1
    y, p = targets[valid], (probs >= 0.5)[valid].astype(int)
    assert got["OP"] == pytest.approx(precision_score(y, p, zero_division=0), abs=1e-12)
    assert got["OR"] == pytest.approx(recall_score(y, p, zero_division=0), abs=1e-12)


def test_cf1_is_harmonic_mean_not_mean_of_f1():
    # class 0: P=1, R=1/2 ; class 1: P=1/2, R=1
    probs = np.array([[0.9, 0.9], [0.1, 0.9], [0.1, 0.1]])
    targets = np.array([[1, 1], [1, 0], [0, 0]])
    got = multilabel_scores(probs, targets)
    assert got["CP"] == pytest.approx(0.75) and got["CR"] == pytest.approx(0.75)
    assert got["CF1"] == pytest.approx(0.75)  # mean of per-class F1 would be 2/3
    assert per_class_scores(probs, targets)["f1"] == pytest.approx([2 / 3, 2 / 3])


def test_threshold_is_inclusive_and_zero_division_guarded():
    probs = np.array([[0.5, 0.49], [0.2, 0.1]])
    targets = np.array([[1, 1], [0, 0]])
    got = multilabel_scores(probs, targets, 0.5)
    # class 0: predicted at exactly 0.5 and correct; class 1: no prediction -> P=0, R=0
    assert got["CP"] == pytest.approx(0.5) and got["CR"] == pytest.approx(0.5)
    assert got["OP"] == 1.0 and got["OR"] == 0.5
    nothing = multilabel_scores(probs, targets, 0.99)
    assert all(v == 0.0 for v in nothing.values())


def test_top_k_requires_rank_and_threshold():
    probs = np.array([[0.9, 0.8, 0.7, 0.6, 0.2]])
    assert predict_labels(probs, 0.5, top_k=3).tolist() == [[True, True, True, False, False]]
    assert predict_labels(probs, 0.75, top_k=3).tolist() == [[True, True, False, False, False]]
    assert predict_labels(probs, 0.1, top_k=10).all()
    # ties at the k-th place: lower class index wins
    tied = np.array([[0.6, 0.9, 0.6, 0.6]])
    assert predict_labels(tied, 0.5, top_k=2).tolist() == [[True, True, False, False]]
    with pytest.raises(ValueError, match="top_k"):
        predict_labels(probs, 0.5, top_k=0)


def test_per_class_thresholds():
    probs = np.array([[0.3, 0.3], [0.7, 0.7], [0.1, 0.9]])
    targets = np.array([[1, 0], [1, 1], [0, 1]])
    pred = predict_labels(probs, [0.25, 0.8])
    assert pred.tolist() == [[True, False], [True, False], [False, True]]
    got = multilabel_scores(probs, targets, np.array([0.25, 0.8]))
    ref = section4a_loop(probs.tolist(), targets.tolist(), [0.25, 0.8])
    assert got == pytest.approx(ref)
    with pytest.raises(ValueError, match="per-class"):
        multilabel_scores(probs, targets, [0.5, 0.5, 0.5])
    with pytest.raises(ValueError, match="does not match"):
        multilabel_scores(probs, targets[:, :1])


# --- threshold tuning -------------------------------------------------------------------------------------

def brute_force_best(p, y, default):
    keep = y != -1
    p, y = p[keep], y[keep]
    if not (y == 1).any():
        return default
    best_t, best_f1 = None, -1.0
    for t in sorted(set(p.tolist()), reverse=True):
        pred = p >= t
        tp = int(np.sum(pred & (y == 1)))
        f1 = 2 * tp / (pred.sum() + (y == 1).sum())
        if f1 > best_f1 + 1e-15:
            best_t, best_f1 = t, f1
    return best_t


@pytest.mark.parametrize("seed", range(3))
def test_best_f1_thresholds_match_brute_force(seed):
    probs, targets = data(seed, ties=(seed == 1), ignore=0.1)
    probs = probs / probs.max()
    targets[:, 3] = np.where(targets[:, 3] == 1, 0, targets[:, 3])  # no positive -> default
    thr = best_f1_thresholds(probs, targets, default=0.42)
    ref = [brute_force_best(probs[:, c], targets[:, c], 0.42) for c in range(probs.shape[1])]
    np.testing.assert_allclose(thr, ref)
    assert thr[3] == 0.42
    # the tuned thresholds never do worse than 0.5 on the data they were tuned on
    tuned = per_class_scores(probs, targets, thr)["f1"]
    fixed = per_class_scores(probs, targets, 0.5)["f1"]
    assert np.all(tuned >= fixed - 1e-12)


def test_best_f1_threshold_tie_goes_to_highest():
    # t=0.8 -> F1 = 2/3 (1 tp, 1 pred, 2 pos); t=0.4 -> 2 tp, 4 pred -> 2/3 too; highest wins
    probs = np.array([[0.8], [0.6], [0.5], [0.4]])
    targets = np.array([[1], [0], [0], [1]])
    assert best_f1_thresholds(probs, targets)[0] == 0.8
