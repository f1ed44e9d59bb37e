"""Budgeted INT8: find a few trunk units to keep in floating point so that, on a labelled split, the mAP drop and
every class's AP drop stay within budget, for both the U8S8 (ONNX Runtime / OpenVINO) and the S8S8 (TensorRT) file.

Search: first the calibration method (``auto``: plain INT8 with each of ONNX Runtime's MinMax, Percentile and
Entropy ranges, checked on the split; the method with the smallest :func:`calibration_error` is kept). Then, if
plain INT8 violates the budget, measure each unit's sensitivity (:mod:`.sensitivity`) and exclude units greedily in
proxy order, checking every candidate set on the split for both schemes (S8S8 with the excluded units in FP16, as
TensorRT's strongly typed engine runs them). A set that passes is pruned (each member dropped again if the rest
still passes). The search stops when INT8 no longer pays off: first an optimistic Amdahl estimate from the excluded
share of Conv MACs, then the candidate's measured speed (the estimate alone was far too hopeful: every INT8/FP
boundary adds Q/DQ and layout changes). Where the U8S8 file is checked and timed is ``backend`` (see
:mod:`.budget_backends`): ONNX Runtime CPU, or OpenVINO with the excluded units in ``fallback_precision``.
"""
from __future__ import annotations

import json
import tempfile
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Sequence

import numpy as np

from der_deploy.errors import ExportError

from .budget_backends import ORT_FP32, Target, check_budget_backend, measure_speeds
from .calibration import METHODS, check_method, method_cache
from .sensitivity import SplitData, Unit, effect, load_split, measure_sensitivity, quant_units

__all__ = ["Budget", "Int8Plan", "Int8BudgetError", "calibration_error", "decide", "measure_speeds", "plan_int8"]

PLAN_VERSION = 2  # 2: backend, fallback_precision, calibration (method and every method tried), checked_on
SPEED_BATCH = 8
MAX_FP_SHARE = 1 / 3  # at most a third of the units in FP: beyond that it is no longer an INT8 model
SENSITIVITY_ENTRIES = 6  # sensitivity runs kept in one file: 3 methods x 2 backends
CALIBRATIONS = ("auto", *METHODS)


class Int8BudgetError(ExportError):
    """No INT8 plan meets the accuracy budget while INT8 still pays off; nothing was written under the INT8 name."""

    exit_code = 1


@dataclass
class Budget:
    max_map_drop: float = 0.3  # mAP points
    max_class_drop: float = 1.0  # AP points, every class

    def met(self, summary: dict) -> bool:
        return summary["delta_map_pt"] >= -self.max_map_drop and summary["worst_delta_ap_pt"] >= -self.max_class_drop


@dataclass
class Int8Plan:
    budget: Budget
    data: str
    images: int
    granularity: str
    excluded: list[str]
    nodes: list[str]
    before: dict[str, dict]  # scheme -> summary of plain INT8 (the kept calibration method)
    after: dict[str, dict]  # scheme -> summary with the exclusions
    img_s: dict[str, float]  # batch 8: fp32 (ORT, the reference), ov_<precision> (OpenVINO), int8, budgeted
    excluded_macs: float  # share of the trunk's Conv MACs kept in floating point
    search_s: float
    sets_evaluated: int
    met: bool = True
    sensitivity: list[dict] = field(default_factory=list)  # most sensitive first (name, proxy, worst ΔAP)
    backend: str = "ort"  # where the U8S8 file was checked and timed
    fallback_precision: str = "fp32"  # what its floating-point layers run in there (OpenVINO's precision hint)
    calibration: dict = field(default_factory=lambda: {"method": "minmax"})  # method, selection, methods: {m: before}
    checked_on: dict[str, str] = field(default_factory=dict)  # scheme -> what ran it ("openvino 2026.4.1 CPU fp32")

    def to_json(self) -> str:
        d = asdict(self)
        d["version"] = PLAN_VERSION
        d["s8s8_excluded_precision"] = "fp16"
        return json.dumps(d, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | dict) -> "Int8Plan":
        """A plan as der-export stored it; version 1 plans (before backends and calibration methods) read as ORT,
        FP32 fallback, minmax."""
        try:
            d = dict(json.loads(text) if isinstance(text, str) else text)
        except (TypeError, ValueError):
            raise ExportError("the INT8 plan is not a JSON object; re-export the file with der-export") from None
        version = d.pop("version", 1)
        if not isinstance(version, int) or version > PLAN_VERSION:
            raise ExportError(f"INT8 plan version {version!r} is newer than this der-deploy reads ({PLAN_VERSION}); "
                              "update der-deploy")
        names = {f.name for f in fields(cls)}
        try:
            plan = cls(**{k: v for k, v in d.items() if k in names and k != "budget"}, budget=Budget(**d["budget"]))
        except (KeyError, TypeError) as err:
            raise ExportError(f"the INT8 plan lacks {err}; re-export the file with der-export") from None
        if version < 2:
            plan.checked_on = {s: "onnxruntime CPU" for s in plan.before}
        return plan

    def speedup(self, key: str) -> float | None:
        fp32, v = self.img_s.get("fp32"), self.img_s.get(key)
        return v / fp32 if fp32 and v else None

    def table(self):
        from der_deploy.progress import table

        def cells(s: dict | None) -> tuple[str, str]:
            if not s:
                return "-", "-"
            return f"{s['delta_map_pt']:+.2f}", f"{s['worst_delta_ap_pt']:+.2f} ({s['worst_class']})"

        def err(by_scheme: dict | None) -> str:
            return f"{max(s['logit_err'] for s in by_scheme.values()):.4f}" if by_scheme else "-"

        def speed(key: str) -> tuple[str, str]:
            v, x = self.img_s.get(key), self.speedup(key)
            return (f"{v:.1f}" if v else "-"), (f"{x:.2f}x" if x else "-")

        def row(name, fp, by_scheme, key):
            by_scheme = by_scheme or {}
            return (name, fp, *cells(by_scheme.get("u8s8")), *cells(by_scheme.get("s8s8")), err(by_scheme), *speed(key))

        chosen = self.calibration.get("method", "minmax")
        tried = self.calibration.get("methods") or {chosen: self.before}
        rows = [("FP32 (ORT)", "-", "+0.00", "+0.00", "+0.00", "+0.00", "0", *speed("fp32"))]
        rows += [(f"FP32 (OpenVINO {k[3:]})", "-", "", "", "", "", "", *speed(k)) for k in sorted(self.img_s)
                 if k.startswith("ov_")]
        for m, summaries in tried.items():
            kept = m == chosen
            rows.append(row(f"INT8 plain, {m}" + (" (kept)" if kept and len(tried) > 1 else ""), "none", summaries,
                            "int8" if kept else ""))
        shown = ", ".join(self.excluded) if self.excluded else "none"
        rows.append(row("INT8 budgeted" if self.met else "best tried (refused)", shown, self.after, "budgeted"))
        on = "ONNX Runtime CPU" if self.backend == "ort" else f"OpenVINO CPU, INT8 + {self.fallback_precision} fallback"
        how = (f"calibration {chosen}" + (f" (smallest error of {len(tried)}: {RULE})" if len(tried) > 1 else ""))
        title = (f"INT8 plan for {on} on {self.data} ({self.images} images): budget ΔmAP >= "
                 f"-{self.budget.max_map_drop:g}, every class ΔAP >= -{self.budget.max_class_drop:g} pt; {how}; "
                 f"{self.granularity} search, {self.sets_evaluated} sets in {self.search_s:.1f} s; "
                 f"{100 * self.excluded_macs:.1f}% of Conv MACs in FP; " + (
                     "S8S8 (TensorRT) checked on ONNX Runtime" if "s8s8" in self.checked_on or not self.checked_on
                     else "S8S8 (TensorRT) not checked: budget ort for TensorRT"))
        return table(title, ("model", "kept in FP", "U8S8 ΔmAP", "U8S8 worst ΔAP", "S8S8 ΔmAP", "S8S8 worst ΔAP",
                             "|Δlogit|", f"img/s b{SPEED_BATCH}", "x ORT FP32"), rows)


RULE = "smallest mean |Δlogit| vs FP32"


def calibration_error(before: dict[str, dict], budget: Budget | None = None) -> float:
    """A calibration method's error on the budget split, before any layer falls back (smaller is better): the mean
    |Δlogit| vs FP32 of its plain INT8 file, the largest over the files the budget checks.

    Not the worst class's ΔAP, nor "within budget first": on a few hundred images one class's AP moves by tenths of a
    point when two images swap ranks, so a method picked by it is picked by the split's noise. Measured on the tiny
    model (val 140 / test 240 images, OpenVINO): |Δlogit| was the same on both splits for each method (0.033/0.032,
    0.030/0.031, 0.059/0.050) while the worst-class ΔAP was not (-0.33/-1.04, -0.78/-0.15, -0.51/-0.42): the method
    that met a 0.5 pt class budget on val lost 1.0 pt on test, the one with the smallest |Δlogit| lost 0.15. |Δlogit|
    over every image and class measures how faithfully the ranges keep the FP32 model, which is what carries to data
    the plan was not fitted on; the budget itself is then met by the layer search (and the plan records every
    method's ΔmAP and worst class). ``budget`` is unused: the error does not depend on it."""
    return max(s["logit_err"] for s in before.values())


def _estimate(speedup: float, fp_share: float, fallback: float = 1.0) -> float:
    """Amdahl, in units of ORT FP32: the excluded share runs at the fallback's speed (``fallback`` x ORT FP32: ORT
    FP32 itself, or OpenVINO at the fallback precision), the rest at the plain INT8 speed-up."""
    return 1.0 / (fp_share / fallback + (1.0 - fp_share) / speedup)


class _Search:
    def __init__(self, src: Path, calib, calib_max: int, cache: Path, split: SplitData, tmp: Path,
                 targets: dict[str, Target], method: str):
        self.src, self.calib, self.calib_max, self.cache, self.split, self.tmp = src, calib, calib_max, cache, split, tmp
        self.targets, self.method = targets, method
        self.evaluated = 0

    def build(self, scheme: str, nodes: Sequence[str], name: str, require_cached: bool = True) -> Path:
        from .quantize import quantize_int8

        path = self.tmp / f"{name}.{self.method}.{scheme}.onnx"
        quantize_int8(self.src, path, self.calib, scheme=scheme, calib_max=self.calib_max, cache=self.cache,
                      exclude=nodes, half_excluded=scheme == "s8s8", require_cached=require_cached, method=self.method)
        return path

    def check(self, nodes: Sequence[str], name: str = "candidate", require_cached: bool = True) -> dict[str, dict]:
        self.evaluated += 1
        return {s: effect(self.build(s, nodes, name, require_cached), self.split, t).summary(self.split.classes)
                for s, t in self.targets.items()}


def plan_int8(src_onnx: str | Path, calib, *, data: str | Path, split: str = "val", budget: Budget | None = None,
              calib_max: int = 256, cache: str | Path, min_speedup: float = 1.5, granularity: str = "auto",
              data_format: str | None = None, max_images: int | None = None, backend: str = "ort",
              fallback_precision: str = "fp32", calibration: str = "minmax") -> Int8Plan:
    """Search the exclusion set; return the plan (``met`` False means refused: see :func:`refusal`).

    ``backend`` / ``fallback_precision``: where the U8S8 file is checked and timed (:mod:`.budget_backends`).
    ``calibration``: a method of :data:`~.calibration.METHODS`, or ``auto`` to try each and keep the one with the
    smallest :func:`calibration_error` (each method calibrates once, into its own cache beside ``cache``)."""
    from der_deploy.progress import err_console

    from .graph import load_onnx

    check_budget_backend(backend, fallback_precision)
    if calibration not in CALIBRATIONS:
        raise ExportError(f"unknown --calibration-method {calibration!r}; use one of {', '.join(CALIBRATIONS)}")
    methods = METHODS if calibration == "auto" else (check_method(calibration),)
    budget = budget or Budget()
    src, cache = Path(src_onnx), Path(cache)
    # OpenVINO runs only the U8S8 file: checking TensorRT's S8S8 file too (on ORT, as a stand-in) would keep layers
    # in FP for an engine that is not the target (measured: S8S8 lost 2-3 pt on a class where OpenVINO's U8S8 lost
    # 0.2-1.2, and meeting both took 9 layers in FP, 3.9x -> 2.35x ORT FP32). For TensorRT, budget with ort.
    targets = {"u8s8": Target(backend, fallback_precision), **({"s8s8": ORT_FP32} if backend == "ort" else {})}
    t_start = time.perf_counter()
    model = load_onnx(src)
    units, granularity = quant_units(model, granularity)
    total_macs = sum(u.macs for u in units) or 1
    split_data = load_split(src, data, split, data_format=data_format, max_images=max_images)
    x8 = split_data.images[:SPEED_BATCH]
    if len(x8) < SPEED_BATCH:
        x8 = np.concatenate([x8] * -(-SPEED_BATCH // len(x8)))[:SPEED_BATCH]
    with tempfile.TemporaryDirectory(prefix="der-int8-plan-") as tmpdir:
        tmp = Path(tmpdir)
        # Plain INT8 per method; its first build calibrates (once per method), every later one reads the cache.
        tried = {m: _Search(src, calib, calib_max, cache, split_data, tmp, targets, m).check([], "plain", False)
                 for m in methods}
        method = min(methods, key=lambda m: calibration_error(tried[m], budget))  # ties: METHODS order
        search = _Search(src, calib, calib_max, cache, split_data, tmp, targets, method)
        search.evaluated = len(methods)
        before = tried[method]
        plain_u8 = tmp / f"plain.{method}.u8s8.onnx"
        fallback = {} if backend == "ort" else {f"ov_{p}": (src, Target(backend, p))
                                                for p in dict.fromkeys(("fp32", fallback_precision))}
        img_s = measure_speeds({"fp32": src, **fallback, "int8": (plain_u8, targets["u8s8"])}, x8)
        speedup = img_s["int8"] / img_s["fp32"]
        fb_speed = img_s[f"ov_{fallback_precision}"] / img_s["fp32"] if fallback else 1.0
        plan = Int8Plan(budget, split_data.where, len(split_data.targets), granularity, [], [], before, before,
                        dict(img_s), 0.0, 0.0, search.evaluated, backend=backend, fallback_precision=fallback_precision,
                        calibration={"method": method, "selection": "auto" if len(methods) > 1 else "given",
                                     "rule": RULE, "methods": tried},
                        checked_on={s: t.label() for s, t in targets.items()})
        if all(budget.met(s) for s in before.values()):
            plan.img_s["budgeted"] = img_s["int8"]
            plan.met = speedup >= min_speedup
            plan.search_s = time.perf_counter() - t_start
            return plan
        if speedup < min_speedup:  # INT8 does not pay off even with nothing excluded: no search can help
            plan.met = False
            plan.search_s = time.perf_counter() - t_start
            return plan
        err_console.print(f"plain INT8 ({method}) misses the budget on {split_data.where}; searching {granularity}s "
                          "to keep in FP")
        ranked = _cached_sensitivity(src, calib, split_data, units, cache, calib_max,
                                     targets=targets, method=method)
        plan.sensitivity = [{"name": r.unit.name, "proxy": round(r.proxy, 6),
                             **{f"{k}_worst_delta_ap_pt": round(e.worst()[1], 3) for k, e in r.effects.items()}}
                            for r in ranked]
        chosen: list[Unit] = []
        found: list[Unit] | None = None
        last = before
        for r in ranked[:max(3, int(len(ranked) * MAX_FP_SHARE))]:
            trial = chosen + [r.unit]
            if _estimate(speedup, sum(u.macs for u in trial) / total_macs, fb_speed) < min_speedup:
                break  # even the optimistic estimate says INT8 no longer pays off: save the evaluations
            chosen = trial
            last = search.check(_nodes(chosen))
            # Measured, not estimated: every INT8 <-> FP boundary adds Q/DQ and layout changes.
            if min_speedup > 0:
                speeds = measure_speeds({"fp32": src, "c": (search.build("u8s8", _nodes(chosen), "candidate"),
                                                            targets["u8s8"])}, x8, budget_s=3.0)
                if speeds["c"] < min_speedup * speeds["fp32"]:
                    break
            if all(budget.met(s) for s in last.values()):
                found = chosen
                break
        if found is not None and len(found) > 1:
            for u in list(reversed(found)):  # prune: the least sensitive members first
                rest = [v for v in found if v != u]
                res = search.check(_nodes(rest))
                if all(budget.met(s) for s in res.values()):
                    found, last = rest, res
        final = found if found is not None else chosen
        plan.excluded, plan.nodes = [u.name for u in final], _nodes(final)
        plan.excluded_macs = sum(u.macs for u in final) / total_macs
        plan.after = last
        if final:  # the files measured together, for the table
            plan.img_s = measure_speeds({"fp32": src, **fallback, "int8": (plain_u8, targets["u8s8"]),
                                         "budgeted": (search.build("u8s8", plan.nodes, "final"), targets["u8s8"])}, x8)
        plan.met = found is not None and plan.img_s.get("budgeted", 0.0) >= min_speedup * plan.img_s["fp32"]
        plan.sets_evaluated = search.evaluated
        plan.search_s = time.perf_counter() - t_start
    return plan


def sensitivity_path(cache: str | Path) -> Path:
    """der.calib.json -> der.int8-sensitivity.json: lets a second budget on the same data skip the pass."""
    from der_deploy.artifact.variants import SUFFIXES

    cache = Path(cache)
    calib = SUFFIXES["calib"]
    stem = cache.name[:-len(calib)] if cache.name.endswith(calib) else cache.stem
    return cache.with_name(stem + SUFFIXES["sensitivity"])


def _cached_sensitivity(src: Path, calib, split: SplitData, units: Sequence[Unit], cache: Path, calib_max: int, *,
                        targets: dict[str, Target], method: str):
    """measure_sensitivity, stored in der.int8-sensitivity.json under a key over the method's ranges, the split's
    preprocessed pixels and labels, the units and (off ONNX Runtime) where each scheme ran; the file keeps the last
    few keys, so runs that alternate methods or backends do not measure again."""
    import hashlib

    from der_deploy.fileio import write_text
    from der_deploy.progress import err_console

    from .sensitivity import Effect, Sensitivity

    ranges = method_cache(cache, method)
    h = hashlib.sha256(json.loads(ranges.read_text(encoding="utf-8")).get("der_deploy", {}).get("key", "").encode())
    h.update(np.ascontiguousarray(split.images).tobytes())
    h.update(np.ascontiguousarray(split.targets).tobytes())
    h.update(json.dumps([[u.name, list(u.nodes)] for u in units]).encode())
    if any(t != ORT_FP32 for t in targets.values()):  # ORT-only keys stay as before: older files still hit
        h.update(json.dumps({s: [t.backend, t.precision] for s, t in sorted(targets.items())}).encode())
    key, path = h.hexdigest(), sensitivity_path(cache)
    by_name = {u.name: u for u in units}
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
        entries = stored.get("entries") or ({stored["key"]: stored["ranked"]} if "key" in stored else {})
    except (OSError, ValueError, KeyError, AttributeError):
        entries = {}
    try:
        if key in entries:
            err_console.print(f"reusing the INT8 sensitivity in {path}")
            return [Sensitivity(by_name[r["unit"]], {k: Effect(e["logit_err"], np.array(e["delta_ap_pt"], dtype=float),
                                                                e["delta_map_pt"]) for k, e in r["effects"].items()})
                    for r in entries[key]]
    except (KeyError, TypeError):
        entries.pop(key, None)
    err_console.print(f"measuring the sensitivity of {len(units)} units ({path.name})")
    ranked = measure_sensitivity(src, calib, split, units, cache=cache, calib_max=calib_max, schemes=tuple(targets),
                                 targets=targets, method=method)
    entries[key] = [{"unit": r.unit.name, "effects": {k: {"logit_err": e.logit_err, "delta_ap_pt": e.delta_ap_pt.tolist(),
                                                          "delta_map_pt": e.delta_map_pt} for k, e in r.effects.items()}}
                    for r in ranked]
    keep = list(entries)[-SENSITIVITY_ENTRIES:]
    write_text(path, json.dumps({"entries": {k: entries[k] for k in keep}}))
    return ranked


def _nodes(units: Sequence[Unit]) -> list[str]:
    return [n for u in units for n in u.nodes]


def refusal(plan: Int8Plan, min_speedup: float, target: str | Path) -> Int8BudgetError:
    worst = min((s["worst_delta_ap_pt"] for s in plan.after.values()), default=0.0)
    x = plan.speedup("budgeted")
    on = "" if plan.backend == "ort" else f" on OpenVINO ({plan.fallback_precision} fallback)"
    best = f"the last set tried ({len(plan.excluded)} units in FP) reached worst-class ΔAP {worst:+.2f} pt" + (
        f" at {x:.2f}x ORT FP32{on}" if x else "")
    if not plan.excluded and (plan.speedup("int8") or 0.0) < min_speedup:
        best = f"plain INT8 itself runs at only {plan.speedup('int8') or 0.0:.2f}x ORT FP32 here{on}"
    return Int8BudgetError(
        f"{target}: no INT8 plan keeps ΔmAP >= -{plan.budget.max_map_drop:g} and every class's ΔAP >= "
        f"-{plan.budget.max_class_drop:g} pt on {plan.data} while INT8 stays >= {min_speedup:g}x ORT FP32; {best}. "
        "No INT8 file was written: raise --max-class-drop / --max-map-drop, or ship FP16")


def decide(src_onnx: str | Path, calib, *, data: str | Path, split: str, budget: Budget, calib_max: int,
           cache: str | Path, min_speedup: float, target: str | Path, backend: str = "ort",
           fallback_precision: str = "fp32", calibration: str = "minmax") -> Int8Plan:
    """der-export's step: search, print the decision table, raise the refusal when no plan pays off."""
    from der_deploy.progress import out_console

    plan = plan_int8(src_onnx, calib, data=data, split=split, budget=budget, calib_max=calib_max, cache=cache,
                     min_speedup=min_speedup, backend=backend, fallback_precision=fallback_precision,
                     calibration=calibration)
    t = plan.table()
    t.columns[1].overflow = "fold"
    out_console.print(t)
    if not plan.met:
        raise refusal(plan, min_speedup, target)
    return plan
