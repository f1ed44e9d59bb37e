"""Multi-label metrics of the DER paper (Eq. 17-18 and §IV-A), numpy only.

Arrays are (N images, C classes). Targets use 1 = positive, 0 = negative, -1 = ignore (e.g. VOC
'difficult'): an ignored cell is removed before ranking (AP) and counts neither as ground truth nor as a
prediction (CP/CR/OP/OR). Scores may be logits or probabilities for AP; thresholds apply to whatever
``probs`` holds.
"""
from __future__ import annotations

import numpy as np

KEYS = ("CP", "CR", "CF1", "OP", "OR", "OF1")


def _check(scores, targets, what: str = "scores") -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64)
    t = np.asarray(targets)
    if s.ndim != 2 or t.ndim != 2:
        raise ValueError(f"{what} and targets must be 2-D (N images, C classes), got {s.shape} and {t.shape}")
    if s.shape != t.shape:
        raise ValueError(f"{what} shape {s.shape} does not match targets shape {t.shape}")
    if s.shape[0] == 0 or s.shape[1] == 0:
        raise ValueError(f"{what} are empty (shape {s.shape}); need at least one image and one class")
    if not np.all(np.isfinite(s)):
        raise ValueError(f"{what} contain NaN or infinite values")
    if not np.all(np.isin(t, (-1, 0, 1))):
        bad = np.unique(t[~np.isin(t, (-1, 0, 1))])[:5]
        raise ValueError(f"targets must be 1 (positive), 0 (negative) or -1 (ignore); found {bad.tolist()}")
    return s, t.astype(np.int8)


def _ranked(s: np.ndarray, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sort one class by descending score; return (scores at tie-group ends, cumulative TP, cumulative N)."""
    order = np.argsort(-s, kind="stable")
    s_sorted = s[order]
    tp = np.cumsum(pos[order])
    # A tied block is one threshold: only its last index is a valid cut (cf. scikit-learn).
    ends = np.r_[np.flatnonzero(np.diff(s_sorted) != 0), s_sorted.size - 1]
    return s_sorted[ends], tp[ends], ends + 1


def average_precision(scores, targets) -> np.ndarray:
    """Per-class non-interpolated AP, Eq. 17: ``AP = sum_n P(n) * (R(n) - R(n-1))``.

    R(n) - R(n-1) is 1/L at each positive and 0 elsewhere, so this is the mean, over the L positives, of
    the precision at each positive's rank (the paper's leading 1/L is that normalisation; it is applied
    once). Cells with target -1 are removed before ranking. A class with no positive gets NaN.

    Ties: images with equal scores form one threshold, like ``sklearn.metrics.average_precision_score``:
    every positive of a tied block gets the precision measured after the whole block, so the result does
    not depend on the input order.
    """
    s, t = _check(scores, targets)
    out = np.full(s.shape[1], np.nan)
    for c in range(s.shape[1]):
        keep = t[:, c] != -1
        pos = t[keep, c] == 1
        n_pos = int(pos.sum())
        if n_pos == 0:
            continue
        _, tp, n = _ranked(s[keep, c], pos)
        gained = np.diff(tp, prepend=0)  # positives inside each tied block
        out[c] = float(np.sum(gained * (tp / n)) / n_pos)
    return out


def mean_average_precision(scores, targets) -> float:
    """Eq. 18: mean of :func:`average_precision` over classes that have a positive (NaN left out), in [0, 1]."""
    ap = average_precision(scores, targets)
    if np.all(np.isnan(ap)):
        raise ValueError("mAP is undefined: no class has a positive target among the given images")
    return float(np.nanmean(ap))


def predict_labels(probs, threshold=0.5, top_k: int | None = None) -> np.ndarray:
    """Boolean (N, C) decisions: ``probs >= threshold`` and, with ``top_k``, among the image's top k.

    ``threshold`` is a scalar or one value per class. Top-k ties are broken by the lower class index.
    """
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2:
        raise ValueError(f"probs must be 2-D (N images, C classes), got shape {p.shape}")
    thr = np.asarray(threshold, dtype=np.float64)
    if thr.ndim not in (0, 1) or (thr.ndim == 1 and thr.shape[0] != p.shape[1]):
        raise ValueError(f"threshold must be a scalar or {p.shape[1]} per-class values, got shape {thr.shape}")
    if not np.all(np.isfinite(thr)):
        raise ValueError("threshold contains NaN or infinite values")
    pred = p >= thr
    if top_k is not None:
        if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
            raise ValueError(f"top_k must be a positive integer, got {top_k!r}")
        if top_k < p.shape[1]:
            top = np.argsort(-p, axis=1, kind="stable")[:, :top_k]
            in_top = np.zeros_like(pred)
            np.put_along_axis(in_top, top, True, axis=1)
            pred &= in_top
    return pred


def _div(a, b):
    """Elementwise a / b with 0/0 (and x/0) -> 0."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return np.divide(a, b, out=np.zeros(np.broadcast(a, b).shape), where=b > 0)


def _counts(probs, targets, threshold, top_k):
    p, t = _check(probs, targets, "probs")
    pred = predict_labels(p, threshold, top_k)
    valid = t != -1
    gt = t == 1
    n_correct = np.sum(pred & gt, axis=0)
    n_pred = np.sum(pred & valid, axis=0)
    n_gt = np.sum(gt, axis=0)
    return n_correct, n_pred, n_gt


def per_class_scores(probs, targets, threshold=0.5, top_k: int | None = None) -> dict[str, np.ndarray]:
    """Per-class ``precision``, ``recall``, ``f1`` (0 where undefined) and ``support`` (= N_i^g)."""
    nc, np_, ng = _counts(probs, targets, threshold, top_k)
    prec, rec = _div(nc, np_), _div(nc, ng)
    return {"precision": prec, "recall": rec, "f1": _div(2 * prec * rec, prec + rec), "support": ng}


def multilabel_scores(probs, targets, threshold=0.5, top_k: int | None = None) -> dict[str, float]:
    """CP, CR, CF1, OP, OR, OF1 of §IV-A as fractions in [0, 1].

    A label is predicted when ``prob >= threshold`` (scalar or per class) and, with ``top_k``, it is also
    among the image's top k. CP and CR average over all C classes (the paper's 1/C): a class with no
    prediction has precision 0 and a class with no ground truth has recall 0, like scikit-learn's
    ``average="macro", zero_division=0``. CF1 is the harmonic mean of CP and CR (not the mean of per-class
    F1), OF1 that of OP and OR; any 0/0 gives 0.
    """
    nc, np_, ng = _counts(probs, targets, threshold, top_k)
    cp = float(np.mean(_div(nc, np_)))
    cr = float(np.mean(_div(nc, ng)))
    op = float(_div(nc.sum(), np_.sum()))
    or_ = float(_div(nc.sum(), ng.sum()))
    return {
        "CP": cp, "CR": cr, "CF1": float(_div(2 * cp * cr, cp + cr)),
        "OP": op, "OR": or_, "OF1": float(_div(2 * op * or_, op + or_)),
    }


def best_f1_thresholds(probs, targets, default: float = 0.5) -> np.ndarray:
    """Per-class threshold that maximises that class's F1 of ``prob >= threshold`` on these data.

    Candidates are the class's distinct scores (ignored cells removed), so the returned value reproduces
    the optimum exactly with ``>=``. F1 ties go to the highest threshold (fewest predicted labels). A class
    without any positive keeps ``default``.
    """
    p, t = _check(probs, targets, "probs")
    out = np.full(p.shape[1], float(default))
    for c in range(p.shape[1]):
        keep = t[:, c] != -1
        pos = t[keep, c] == 1
        n_pos = int(pos.sum())
        if n_pos == 0:
            continue
        cut, tp, n = _ranked(p[keep, c], pos)
        f1 = 2.0 * tp / (n + n_pos)
        out[c] = cut[int(np.argmax(f1))]  # argmax: first (highest-threshold) maximum
    return out
