"""scikit-learn's average precision as the independent reference for every mAP the project computes.

Targets use the VOC convention: 1 positive, 0 negative, -1 "difficult" (left out of that class's AP).
A class without positives has no AP (NaN), and mAP is the mean over the classes that have one.
"""
import numpy as np
from sklearn.metrics import average_precision_score


def sklearn_ap(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    out = []
    for c in range(targets.shape[1]):
        keep = targets[:, c] != -1
        pos = targets[keep, c] == 1
        out.append(average_precision_score(pos, scores[keep, c]) if pos.any() else np.nan)
    return np.array(out)


def sklearn_map(scores: np.ndarray, targets: np.ndarray) -> float:
    return float(np.nanmean(sklearn_ap(scores, targets)))
