"""``der-eval``: mAP and §IV-A scores of an engine on a labelled split, plus the parity gate vs PyTorch."""
from __future__ import annotations

import json
from pathlib import Path

import click

from ._common import handle_errors


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100.0 * v:.2f}"


def _budget(ctx, param, values: tuple[str, ...]) -> dict[str, float]:
    out: dict[str, float] = {}
    for item in values:
        key, sep, val = item.partition("=")
        try:
            if not sep or key not in ("fp32", "fp16", "bf16", "int8"):
                raise ValueError
            out[key] = float(val)
        except ValueError:
            raise click.BadParameter(f"{item!r}: use PRECISION=POINTS, e.g. fp16=0.3 (precisions: fp32, fp16, bf16, "
                                     "int8)") from None
    return out


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--engine", "engine", required=True, type=click.Path(path_type=Path), help="An .onnx or .plan file from der-export.")
@click.argument("data", type=click.Path(path_type=Path))
@click.option("--split", default="test", show_default=True, help="Dataset split to evaluate.")
@click.option("--format", "data_format", type=click.Choice(["voc", "coco", "nuswide", "csv"]), help="Dataset format (detected from DATA by default).")
@click.option("--reference", type=click.Path(path_type=Path), help="PyTorch checkpoint to compare against (needs der-deploy[train]).")
@click.option("--budget", "budgets", multiple=True, callback=_budget, metavar="PREC=PTS",
              help="|ΔmAP| budget in points, e.g. --budget fp16=0.3. Defaults: fp32=0.05, fp16=0.3, bf16=0.3 "
                   "(OpenVINO --precision bf16 on an FP32 file), int8=1.0.")
@click.option("--max-class-drop", type=click.FloatRange(min=0), default=None, metavar="PTS",
              help="Also fail (exit 1) when any class's AP drops by more than PTS points vs --reference (any engine).")
@click.option("--tune-thresholds", is_flag=True, help="Pick per-class F1-optimal thresholds on this split and write a new card + engine.")
@click.option("--batch-size", default=8, show_default=True, type=click.IntRange(1), help="Images per engine call.")
@click.option("--workers", type=click.IntRange(1), help="Decode threads (default: CPU count).")
@click.option("--backend", type=click.Choice(["auto", "ort", "trt", "openvino"]), default="auto", show_default=True,
              help="auto: ONNX Runtime for .onnx, TensorRT for .plan; openvino: Intel's CPU runtime (same .onnx files).")
@click.option("--precision", type=click.Choice(["fp32", "bf16", "fp16"]), default=None,
              help="OpenVINO inference precision (with --backend openvino); bf16 needs native BF16 (AMX/AVX512_BF16).")
@click.option("--json", "json_out", type=click.Path(path_type=Path), help="Also write the full report as JSON.")
@handle_errors
def main(engine, data, split, data_format, reference, budgets, max_class_drop, tune_thresholds, batch_size, workers, backend,
         precision, json_out):
    """Evaluate ENGINE on DATA: mAP, CP/CR/CF1/OP/OR/OF1 (all labels and top-3).

    With --reference, the checkpoint runs on the same preprocessed images and the command exits 1 when
    |ΔmAP| exceeds the budget for the engine's precision. When the two cards decode differently (an engine
    exported with der-export --decode draft from a checkpoint trained with full decoding), each side decodes the
    images as its own card says, so ΔmAP measures the decoding change too.
    """
    from der_deploy.fileio import write_text
    from der_deploy.progress import out_console, table
    from der_deploy.tools.evaluate import ParityError, evaluate

    if precision is not None and backend != "openvino":
        raise click.UsageError("--precision sets OpenVINO's inference precision; add --backend openvino")
    report = evaluate(engine, data, split=split, data_format=data_format, reference=reference, batch_size=batch_size,
                      workers=workers, backend=backend, budgets=budgets, tune_thresholds=tune_thresholds,
                      max_class_drop=max_class_drop, precision=precision)
    keys = ("CP", "CR", "CF1", "OP", "OR", "OF1")
    rows = [("all", _pct(report.map), *(_pct(report.all_labels[k]) for k in keys)),
            ("top-3", "", *(_pct(report.top3[k]) for k in keys))]
    title = (f"{engine.name} ({report.precision}) on {split}: {report.num_images} images, {len(report.classes)} classes "
             f"[{report.runtime}]")
    out_console.print(table(title, ("labels", "mAP", *keys), rows))
    if report.int8_plan is not None:
        _show_plan(report.int8_plan)
    p = report.parity
    if p is not None:
        cols = ["reference mAP", "ΔmAP (pt)", "worst class ΔAP (pt)", "flipped decisions", "max |Δscore|", "budget (pt)"]
        row = [_pct(p.reference_map), f"{p.delta_map_pt:+.3f}", f"{p.worst_class} {p.worst_delta_ap_pt:+.3f}",
               f"{100 * p.flip_fraction:.3f}%", f"{p.max_abs_score_diff:.2e}", f"{p.budget_pt:g}"]
        if p.max_class_drop_pt is not None:
            cols += ["largest class drop (pt)", "class budget (pt)"]
            row += [f"{p.drop_class} {p.drop_pt:+.3f}", f"{p.max_class_drop_pt:g}"]
        out_console.print(table(f"parity vs {reference.name}", (*cols, "result"), [(*row, "PASS" if p.passed else "FAIL")]))
    if report.tuned:
        out_console.print(f"tuned thresholds written: {report.tuned['card']} and {report.tuned['engine']}")
    if json_out:
        write_text(json_out, json.dumps(report.to_dict(), indent=2) + "\n")
    if p is not None and not p.class_passed:
        raise ParityError(f"{engine}: class {p.drop_class!r} lost {-p.drop_pt:.3f} AP points vs {reference.name}, over the "
                          f"--max-class-drop budget of {p.max_class_drop_pt:g}; re-export (der-export --budget-data) "
                          "or raise the budget")
    if p is not None and not p.passed:
        raise ParityError(f"{engine}: |ΔmAP| = {abs(p.delta_map_pt):.3f} pt exceeds the {report.precision} budget of "
                          f"{p.budget_pt:g} pt; re-export or raise the budget with --budget {report.precision}=N")


def _show_plan(plan: dict) -> None:
    """One line on the budgeted-INT8 decision der-export recorded in the engine."""
    from der_deploy.progress import out_console
    from der_deploy.tools.bench import plan_checked_on

    b, fp = plan.get("budget", {}), plan.get("excluded", [])
    after = plan.get("after", {}).get("u8s8", {})
    out_console.print(f"INT8 plan (der-export --budget-data on {plan.get('data')}): {len(fp)} "
                      f"{plan.get('granularity', 'layer')}s in floating point ({', '.join(fp) or 'none'}); budget ΔmAP >= "
                      f"-{b.get('max_map_drop')} / class ΔAP >= -{b.get('max_class_drop')} pt; measured there "
                      f"ΔmAP {after.get('delta_map_pt', 0):+.2f}, worst class {after.get('worst_class')} "
                      f"{after.get('worst_delta_ap_pt', 0):+.2f} ({plan_checked_on(plan)})")
