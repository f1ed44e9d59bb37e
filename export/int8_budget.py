"""Budgeted INT8: find a few trunk units to keep in floating point so that, on a labelled split, the mAP drop and
every class's AP drop stay within budget, for both the U8S8 (ONNX Runtime) and the S8S8 (TensorRT) file.

Search: plain INT8 first; if it violates the budget, measure each unit's sensitivity (:mod:`.sensitivity`) and
exclude units greedily in proxy order, checking every candidate set on the split for both schemes (S8S8 with
the excluded units in FP16, as TensorRT's strongly typed engine runs them). A set that passes is pruned (each
member dropped again if the rest still passes). The search stops when INT8 no longer pays off: first an
optimistic Amdahl estimate from the excluded share of Conv MACs, then the candidate's measured speed (the
estimate alone was far too hopeful: every INT8/FP boundary adds Q/DQ and layout changes in ORT). Speeds are
ONNX Runtime CPU images/s at batch 8 of the U8S8 file, the one that runs here, measured interleaved with FP32.
"""
from __future__ import annotations

import json
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from der_deploy.errors import ExportError

from .sensitivity import SCHEMES, SplitData, Unit, effect, load_split, measure_sensitivity, quant_units

PLAN_VERSION = 1
SPEED_BATCH = 8
MAX_FP_SHARE = 1 / 3  # at most a third of the units in FP: beyond that it is no longer an INT8 model


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
    before: dict[str, dict]  # scheme -> summary of plain INT8
    after: dict[str, dict]  # scheme -> summary with the exclusions
    img_s: dict[str, float]  # fp32 / int8 / budgeted, ORT CPU, batch 8
    excluded_macs: float  # share of the trunk's Conv MACs kept in floating point
    search_s: float
    sets_evaluated: int
    met: bool = True
    sensitivity: list[dict] = field(default_factory=list)  # most sensitive first (name, proxy, worst ΔAP)

    def to_json(self) -> str:
        d = asdict(self)
        d["version"] = PLAN_VERSION
        d["s8s8_excluded_precision"] = "fp16"
        return json.dumps(d, separators=(",", ":"))

    def speedup(self, key: str) -> float | None:
        fp32, v = self.img_s.get("fp32"), self.img_s.get(key)
        return v / fp32 if fp32 and v else None

    def table(self):
        from der_deploy.progress import table

        def cells(s: dict | None) -> tuple[str, str]:
            if not s:
                return "-", "-"
            return f"{s['delta_map_pt']:+.2f}", f"{s['worst_delta_ap_pt']:+.2f} ({s['worst_class']})"

        def speed(key: str) -> tuple[str, str]:
            v, x = self.img_s.get(key), self.speedup(key)
            return (f"{v:.1f}" if v else "-"), (f"{x:.2f}x" if x else "-")

        shown = ", ".join(self.excluded) if self.excluded else "none"
        rows = [("FP32", "-", "+0.00", "+0.00", "+0.00", "+0.00", *speed("fp32")),
                ("INT8 plain", "none", *cells(self.before.get("u8s8")), *cells(self.before.get("s8s8")), *speed("int8"))]
        if self.met:
            rows.append(("INT8 budgeted", shown, *cells(self.after.get("u8s8")), *cells(self.after.get("s8s8")),
                         *speed("budgeted")))
        else:
            rows.append(("best tried (refused)", shown, *cells(self.after.get("u8s8")), *cells(self.after.get("s8s8")),
                         *speed("budgeted")))
        title = (f"INT8 plan on {self.data} ({self.images} images): budget ΔmAP >= -{self.budget.max_map_drop:g}, "
                 f"every class ΔAP >= -{self.budget.max_class_drop:g} pt; {self.granularity} search, "
                 f"{self.sets_evaluated} sets in {self.search_s:.1f} s; {100 * self.excluded_macs:.1f}% of Conv MACs in FP")
        t = table(title, ("model", "kept in FP", "U8S8 ΔmAP", "U8S8 worst ΔAP", "S8S8 ΔmAP", "S8S8 worst ΔAP",
                          f"img/s b{SPEED_BATCH}", "x FP32"), rows)
        return t


def measure_speeds(paths: dict[str, str | Path], x: np.ndarray, *, rounds: int = 12, iters: int = 3,
                   budget_s: float = 10.0) -> dict[str, float]:
    """ORT CPU images/s of each file on batch ``x``, measured in interleaved rounds (A B C A B C ...) so that all
    files see the same load from other processes; each file's best round counts. On this shared 2-core machine
    back-to-back medians of the same file varied by 1.5x; interleaved best-of ratios were stable to ~10%."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    feed = {"images": np.ascontiguousarray(x)}
    sessions = {k: ort.InferenceSession(str(p), opts, providers=["CPUExecutionProvider"]) for k, p in paths.items()}
    t0 = time.perf_counter()
    for sess in sessions.values():
        for _ in range(2):
            sess.run(["logits"], feed)
    per_round = (time.perf_counter() - t0) / 2 * iters
    rounds = max(3, min(rounds, int(budget_s / max(per_round, 1e-6))))  # big models: fewer rounds, bounded time
    best = {k: float("inf") for k in sessions}
    for _ in range(rounds):
        for k, sess in sessions.items():
            t0 = time.perf_counter()
            for _ in range(iters):
                sess.run(["logits"], feed)
            best[k] = min(best[k], (time.perf_counter() - t0) / iters)
    return {k: len(x) / v for k, v in best.items()}


def _estimate(speedup: float, fp_share: float) -> float:
    """Amdahl: the excluded share runs at FP32 speed, the rest at the plain INT8 speed-up."""
    return 1.0 / (fp_share + (1.0 - fp_share) / speedup)


class _Search:
    def __init__(self, src: Path, calib, calib_max: int, cache: Path, split: SplitData, tmp: Path):
        self.src, self.calib, self.calib_max, self.cache, self.split, self.tmp = src, calib, calib_max, cache, split, tmp
        self.evaluated = 0

    def build(self, scheme: str, nodes: Sequence[str], name: str) -> Path:
        from .quantize import quantize_int8

        path = self.tmp / f"{name}.{scheme}.onnx"
        quantize_int8(self.src, path, self.calib, scheme=scheme, calib_max=self.calib_max, cache=self.cache,
                      exclude=nodes, half_excluded=scheme == "s8s8", require_cached=True)
        return path

    def check(self, nodes: Sequence[str], name: str = "candidate") -> dict[str, dict]:
        self.evaluated += 1
        return {s: effect(self.build(s, nodes, name), self.split).summary(self.split.classes) for s in SCHEMES}


def plan_int8(src_onnx: str | Path, calib, *, data: str | Path, split: str = "val", budget: Budget | None = None,
              calib_max: int = 256, cache: str | Path, min_speedup: float = 1.5, granularity: str = "auto",
              data_format: str | None = None, max_images: int | None = None) -> Int8Plan:
    """Search the exclusion set; return the plan (``met`` False means refused: see :func:`refusal`)."""
    from der_deploy.progress import err_console

    from .graph import load_onnx
    from .quantize import quantize_int8

    budget = budget or Budget()
    src, cache = Path(src_onnx), Path(cache)
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
        # One calibration pass, here; every candidate below reads the cache (require_cached).
        plain_u8 = quantize_int8(src, tmp / "plain.u8s8.onnx", calib, scheme="u8s8", calib_max=calib_max, cache=cache)
        search = _Search(src, calib, calib_max, cache, split_data, tmp)
        before = search.check([], "plain")
        img_s = measure_speeds({"fp32": src, "int8": plain_u8}, x8)
        speedup = img_s["int8"] / img_s["fp32"]
        plan = Int8Plan(budget, split_data.where, len(split_data.targets), granularity, [], [], before, before, dict(img_s),
                        0.0, 0.0, search.evaluated)
        if all(budget.met(s) for s in before.values()):
            plan.img_s["budgeted"] = img_s["int8"]
            plan.met = speedup >= min_speedup
            plan.search_s = time.perf_counter() - t_start
            return plan
        if speedup < min_speedup:  # INT8 does not pay off even with nothing excluded: no search can help
            plan.met = False
            plan.search_s = time.perf_counter() - t_start
            return plan
        err_console.print(f"plain INT8 misses the budget on {split_data.where}; searching {granularity}s to keep in FP")
        ranked = _cached_sensitivity(src, calib, split_data, units, cache, calib_max)
        plan.sensitivity = [{"name": r.unit.name, "proxy": round(r.proxy, 6),
                             **{f"{k}_worst_delta_ap_pt": round(e.worst()[1], 3) for k, e in r.effects.items()}}
                            for r in ranked]
        chosen: list[Unit] = []
        found: list[Unit] | None = None
        last = before
        for r in ranked[:max(3, int(len(ranked) * MAX_FP_SHARE))]:
            trial = chosen + [r.unit]
            if _estimate(speedup, sum(u.macs for u in trial) / total_macs) < min_speedup:
                break  # even the optimistic estimate says INT8 no longer pays off: save the evaluations
            chosen = trial
            last = search.check(_nodes(chosen))
            # Measured, not estimated: every INT8 <-> FP boundary adds Q/DQ and layout changes in ORT.
            if min_speedup > 0:
                speeds = measure_speeds({"fp32": src, "c": search.build("u8s8", _nodes(chosen), "candidate")}, x8,
                                        budget_s=3.0)
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
        if final:  # the three files measured together, for the table
            plan.img_s = measure_speeds({"fp32": src, "int8": plain_u8,
                                         "budgeted": search.build("u8s8", plan.nodes, "final")}, x8)
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


def _cached_sensitivity(src: Path, calib, split: SplitData, units: Sequence[Unit], cache: Path, calib_max: int):
    """measure_sensitivity, stored beside the calibration cache under a key over the ranges, the split's
    preprocessed pixels and labels, and the units."""
    import hashlib

    from der_deploy.fileio import write_text
    from der_deploy.progress import err_console

    from .sensitivity import Effect, Sensitivity

    h = hashlib.sha256(json.loads(cache.read_text(encoding="utf-8")).get("der_deploy", {}).get("key", "").encode())
    h.update(np.ascontiguousarray(split.images).tobytes())
    h.update(np.ascontiguousarray(split.targets).tobytes())
    h.update(json.dumps([[u.name, list(u.nodes)] for u in units]).encode())
    key, path = h.hexdigest(), sensitivity_path(cache)
    by_name = {u.name: u for u in units}
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
        if stored.get("key") == key:
            err_console.print(f"reusing the INT8 sensitivity in {path}")
            return [Sensitivity(by_name[r["unit"]], {k: Effect(e["logit_err"], np.array(e["delta_ap_pt"], dtype=float),
                                                                e["delta_map_pt"]) for k, e in r["effects"].items()})
                    for r in stored["ranked"]]
    except (OSError, ValueError, KeyError):
        pass
    err_console.print(f"measuring the sensitivity of {len(units)} units ({path.name})")
    ranked = measure_sensitivity(src, calib, split, units, cache=cache, calib_max=calib_max)
    rows = [{"unit": r.unit.name, "effects": {k: {"logit_err": e.logit_err, "delta_ap_pt": e.delta_ap_pt.tolist(),
                                                  "delta_map_pt": e.delta_map_pt} for k, e in r.effects.items()}}
            for r in ranked]
    write_text(path, json.dumps({"key": key, "ranked": rows}))
    return ranked


def _nodes(units: Sequence[Unit]) -> list[str]:
    return [n for u in units for n in u.nodes]


def refusal(plan: Int8Plan, min_speedup: float, target: str | Path) -> Int8BudgetError:
    worst = min((s["worst_delta_ap_pt"] for s in plan.after.values()), default=0.0)
    x = plan.speedup("budgeted")
    best = f"the last set tried ({len(plan.excluded)} units in FP) reached worst-class ΔAP {worst:+.2f} pt" + (
        f" at {x:.2f}x FP32" if x else "")
    if not plan.excluded and (plan.speedup("int8") or 0.0) < min_speedup:
        best = f"plain INT8 itself runs at only {plan.speedup('int8') or 0.0:.2f}x FP32 here"
    return Int8BudgetError(
        f"{target}: no INT8 plan keeps ΔmAP >= -{plan.budget.max_map_drop:g} and every class's ΔAP >= "
        f"-{plan.budget.max_class_drop:g} pt on {plan.data} while INT8 stays >= {min_speedup:g}x FP32; {best}. "
        "No INT8 file was written: raise --max-class-drop / --max-map-drop, or ship FP16")


def decide(src_onnx: str | Path, calib, *, data: str | Path, split: str, budget: Budget, calib_max: int,
           cache: str | Path, min_speedup: float, target: str | Path) -> Int8Plan:
    """der-export's step: search, print the decision table, raise the refusal when no plan pays off."""
    from der_deploy.progress import out_console

    plan = plan_int8(src_onnx, calib, data=data, split=split, budget=budget, calib_max=calib_max, cache=cache,
                     min_speedup=min_speedup)
    t = plan.table()
    t.columns[1].overflow = "fold"
    out_console.print(t)
    if not plan.met:
        raise refusal(plan, min_speedup, target)
    return plan
