"""One comparator for every parity check (export verification, runtime tests, der-bench), after Polygraphy.

Per output: shape, dtype and non-finite checks, then abs error |a - r| and rel error |a - r| / |r|
(|r| floored at float32 tiny, so an exact zero reference gives a huge, not infinite, rel error).

Scale-aware bound (``scale_tol``, 0 = off): floating-point error grows with the magnitude of what was summed,
not with each element's own value, so a logit near zero in a row whose logits reach 1e4 carries the row's
rounding error (about 1e-6 of 1e4 in FP32), far above any fixed atol. Each element may therefore also be off by
``scale_tol · scale``, where ``scale`` is max|r| over its sample (all axes but the first; the whole output for
1-D ones), or ``factor ·`` that of another output given by ``scale_of`` (e.g. scores = sigmoid(logits) moves by
at most 1/4 of the logit error: ``scale_of={"scores": ("logits", 0.25)}``). The scaled error is
|a - r| / scale.

``check_error_stat`` decides what must lie within tolerance:
- ``"elemwise"``: every element satisfies |a - r| <= atol + rtol·|r| + scale_tol·scale (numpy ``allclose``
  rule plus the scale term);
- ``"max"`` / ``"mean"`` / ``"median"``: that statistic of the abs error <= atol, OR that statistic of the
  rel error <= rtol, OR (when scale_tol > 0) that statistic of the scaled error <= scale_tol. As in Polygraphy
  an output fails only when every bound is exceeded, so ``rtol=0`` means "abs error only" and near-zero
  references cannot fail a check on their own.
NaN anywhere fails; ±inf passes only where the reference has the same inf at the same place.
atol/rtol/scale_tol/check_error_stat are a single value or a dict keyed by output name (``"*"`` = default).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from .errors import VerificationError

STATS = ("elemwise", "max", "mean", "median")
_TINY = float(np.finfo(np.float32).tiny)


@dataclass
class OutputComparison:
    name: str
    passed: bool
    stat: str
    atol: float
    rtol: float
    shape: tuple | None = None
    max_abs: float = float("nan")
    mean_abs: float = float("nan")
    median_abs: float = float("nan")
    max_rel: float = float("nan")
    mean_rel: float = float("nan")
    median_rel: float = float("nan")
    scale_tol: float = 0.0
    max_scaled: float = float("nan")  # |a - r| / scale (see the module doc)
    mean_scaled: float = float("nan")
    mismatches: int = 0  # elements outside atol + rtol·|r| + scale_tol·scale
    size: int = 0
    reason: str | None = None  # why it failed, in words


@dataclass
class CompareResult:
    outputs: list[OutputComparison] = field(default_factory=list)
    title: str = ""

    @property
    def passed(self) -> bool:
        return bool(self.outputs) and all(o.passed for o in self.outputs)

    def __getitem__(self, name: str) -> OutputComparison:
        for o in self.outputs:
            if o.name == name:
                return o
        raise KeyError(name)

    COLUMNS = ("output", "shape", "check (atol/rtol/scale)", "max abs", "mean abs", "max rel", "mean rel",
               "result")

    def rows(self) -> list[tuple]:
        out = []
        for o in self.outputs:
            check = f"{o.stat} {o.atol:g}/{o.rtol:g}" + (f"/{o.scale_tol:g}" if o.scale_tol else "")
            result = "pass" if o.passed else f"FAIL: {o.reason}"
            shape = "x".join(map(str, o.shape)) if o.shape is not None else "-"
            out.append((o.name, shape, check, _fmt(o.max_abs), _fmt(o.mean_abs), _fmt(o.max_rel), _fmt(o.mean_rel), result))
        return out

    def table(self, title: str | None = None):
        from .progress import table

        return table(title or self.title or None, self.COLUMNS, self.rows())

    def summary(self) -> str:
        """One line: the worst abs error per output, e.g. 'logits max 2.1e-06, scores max 4.8e-07'."""
        return ", ".join(f"{o.name} max {_fmt(o.max_abs)}" for o in self.outputs)

    def raise_if_failed(self, context: str) -> "CompareResult":
        if not self.passed:
            bad = [f"{o.name} ({o.reason})" for o in self.outputs if not o.passed] or ["no outputs compared"]
            raise VerificationError(f"{context}: outputs differ beyond tolerance: {'; '.join(bad)}")
        return self


def _fmt(v: float) -> str:
    return "-" if v != v else f"{v:.2g}"


def _pick(value, name: str, what: str):
    if isinstance(value, Mapping):
        if name in value:
            return value[name]
        if "*" in value:
            return value["*"]
        raise ValueError(f"no {what} given for output {name!r} (add it or a '*' default)")
    return value


def row_scale(ref: np.ndarray) -> np.ndarray:
    """max|ref| per sample (over all axes but the first, kept for broadcasting); the whole output's for ndim < 2.
    Non-finite entries are left out (an inf says nothing about the rounding of its neighbours)."""
    r = np.abs(np.asarray(ref, dtype=np.float64))
    r = np.where(np.isfinite(r), r, 0.0)
    if r.size == 0:
        return np.zeros((1,) * max(r.ndim, 1))
    if r.ndim < 2:
        return np.full((1,) * max(r.ndim, 1), r.max())
    return r.max(axis=tuple(range(1, r.ndim)), keepdims=True)


def compare_one(name: str, ref: np.ndarray, act: np.ndarray, *, atol: float, rtol: float, stat: str,
                scale_tol: float = 0.0, scale: np.ndarray | None = None) -> OutputComparison:
    """One output; ``scale`` (broadcastable to it) defaults to :func:`row_scale` of ``ref``."""
    if stat not in STATS:
        raise ValueError(f"unknown check_error_stat {stat!r}; use one of {', '.join(STATS)}")
    if not scale_tol >= 0:
        raise ValueError(f"scale_tol must be >= 0, got {scale_tol!r}")
    ref, act = np.asarray(ref), np.asarray(act)
    res = OutputComparison(name, False, stat, float(atol), float(rtol), shape=tuple(act.shape), size=int(ref.size),
                           scale_tol=float(scale_tol))
    if ref.shape != act.shape:
        res.reason = f"shape {tuple(act.shape)} != expected {tuple(ref.shape)}"
        return res
    if ref.dtype != act.dtype:
        res.reason = f"dtype {act.dtype} != expected {ref.dtype}"
        return res
    r = ref.astype(np.float64)
    a = act.astype(np.float64)
    nan = int(np.isnan(a).sum())
    if nan or np.isnan(r).any():
        res.reason = f"{nan} NaN in output" if nan else "NaN in reference"
        return res
    finite = np.isfinite(r) & np.isfinite(a)
    bad_inf = int((~finite & (r != a)).sum())
    diff = np.abs(a[finite] - r[finite])
    rel = diff / np.maximum(np.abs(r[finite]), _TINY)
    sc = np.broadcast_to(row_scale(r) if scale is None else np.asarray(scale, np.float64), r.shape)[finite]
    scaled = diff / np.maximum(sc, _TINY)
    if diff.size:
        res.max_abs, res.mean_abs, res.median_abs = float(diff.max()), float(diff.mean()), float(np.median(diff))
        res.max_rel, res.mean_rel, res.median_rel = float(rel.max()), float(rel.mean()), float(np.median(rel))
        res.max_scaled, res.mean_scaled = float(scaled.max()), float(scaled.mean())
    else:
        res.max_abs = res.mean_abs = res.median_abs = res.max_rel = res.mean_rel = res.median_rel = 0.0
        res.max_scaled = res.mean_scaled = 0.0
    res.mismatches = int((diff > atol + rtol * np.abs(r[finite]) + scale_tol * sc).sum()) + bad_inf
    if bad_inf:
        res.reason = f"{bad_inf} inf where the reference differs"
    elif stat == "elemwise":
        if res.mismatches:
            bound = "atol+rtol*|ref|" + ("+scale_tol*scale" if scale_tol else "")
            res.reason = f"{res.mismatches}/{res.size} elements outside {bound} (max abs {_fmt(res.max_abs)})"
    else:
        abs_v, rel_v = getattr(res, f"{stat}_abs"), getattr(res, f"{stat}_rel")
        scaled_v = {"max": np.max, "mean": np.mean, "median": np.median}[stat](scaled) if scaled.size else 0.0
        if abs_v > atol and rel_v > rtol and not (scale_tol and scaled_v <= scale_tol):
            res.reason = f"{stat} abs {_fmt(abs_v)} > {atol:g} and {stat} rel {_fmt(rel_v)} > {rtol:g}"
            if scale_tol:
                res.reason += f" and {stat} scaled {_fmt(float(scaled_v))} > {scale_tol:g}"
    res.passed = res.reason is None
    return res


def compare_outputs(
    reference: Mapping[str, np.ndarray],
    actual: Mapping[str, np.ndarray],
    *,
    atol: float | Mapping[str, float] = 1e-4,
    rtol: float | Mapping[str, float] = 1e-3,
    check_error_stat: str | Mapping[str, str] = "elemwise",
    scale_tol: float | Mapping[str, float] = 0.0,
    scale_of: Mapping[str, tuple[str, float]] | None = None,
    names: Sequence[str] | None = None,
    title: str = "",
) -> CompareResult:
    """Compare each output of ``reference`` (or only ``names``) against ``actual``; extra actual outputs are ignored.

    ``scale_of`` maps an output to ``(other, factor)``: its scale is ``factor`` times the other reference output's
    :func:`row_scale` (used when that output is in the reference and has the same first dimension).
    """
    result = CompareResult(title=title)
    for name in names if names is not None else list(reference):
        a, r = _pick(atol, name, "atol"), _pick(rtol, name, "rtol")
        stat = _pick(check_error_stat, name, "check_error_stat")
        # scale_tol is an optional extra: an output a dict does not name (and no "*") has none.
        st = float(scale_tol.get(name, scale_tol.get("*", 0.0)) if isinstance(scale_tol, Mapping) else scale_tol)
        if name not in reference:
            raise ValueError(f"output {name!r} is not in the reference outputs")
        if name not in actual:
            result.outputs.append(OutputComparison(name, False, stat, float(a), float(r), reason="output missing",
                                                   scale_tol=st))
            continue
        result.outputs.append(compare_one(name, reference[name], actual[name], atol=a, rtol=r, stat=stat,
                                          scale_tol=st, scale=_scale_from(reference, name, scale_of)))
    return result


def _scale_from(reference: Mapping[str, np.ndarray], name: str, scale_of) -> np.ndarray | None:
    if not scale_of or name not in scale_of:
        return None
    other, factor = scale_of[name]
    src, own = reference.get(other), np.asarray(reference[name])
    if src is None or np.ndim(src) < 1 or own.ndim < 1 or np.shape(src)[0] != own.shape[0]:
        return None  # e.g. a subset of outputs without the one the scale comes from: the output's own scale
    per_sample = row_scale(src).reshape((-1,) + (1,) * (own.ndim - 1)) if np.ndim(src) >= 2 else row_scale(src)
    return float(factor) * per_sample
