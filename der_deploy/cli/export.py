"""der-export: checkpoint -> verified ONNX (FP32, optional FP16 / INT8) and, with --trt, a TensorRT engine.

Every file written is verified against the training model (or, for an .onnx MODEL, against the FP32 ONNX
in ONNX Runtime) and only renamed into place when it passes. There is deliberately no --no-verify.
Output names follow -o: der.onnx -> der.fp16.onnx, der.int8.onnx (U8S8, ORT CPU), der.int8-s8s8.onnx
(TensorRT), der.plan (+ der.plan.json), der.calib.json (calibration ranges, shared by both INT8 schemes).
"""
from __future__ import annotations

import time
from pathlib import Path

import click

from ._common import decode_option, handle_errors


def _profile(ctx, param, value):
    from der_deploy.artifact.profile import parse_profile

    try:
        return parse_profile(value)
    except ValueError as err:
        raise click.BadParameter(str(err)) from None


def _load_tensorrt():
    from der_deploy.backends.tensorrt import builder

    builder.tensorrt_available()  # tensorrt itself is imported here, never at module import
    return builder


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None,
              help="FP32 ONNX path; variants are named after it [default: der.onnx, or MODEL for an .onnx MODEL].")
@click.option("--fp16", is_flag=True, help="Also write a mixed-precision FP16 ONNX (float32 I/O, FP32 head).")
@click.option("--int8", is_flag=True, help="Also write a static INT8 Q/DQ ONNX for ONNX Runtime CPU (U8S8); needs --calib.")
@click.option("--calib", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder of real images (like the training data) for INT8 calibration.")
@click.option("--calib-max", type=click.IntRange(min=1), default=256, show_default=True,
              help="Use at most this many calibration images (spread over the folder).")
@click.option("--budget-data", type=click.Path(path_type=Path), default=None,
              help="Labelled dataset for an INT8 accuracy budget: keep the layers that break it in floating point "
                   "(both INT8 files are written, checked as --budget-backend says; refuses when INT8 would no "
                   "longer pay off).")
@click.option("--split", "budget_split", default="val", show_default=True, help="Split of --budget-data to check.")
@click.option("--max-map-drop", type=click.FloatRange(min=0), default=0.3, show_default=True,
              help="INT8 budget: largest mAP drop vs FP32, in points.")
@click.option("--max-class-drop", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="INT8 budget: largest AP drop of any class vs FP32, in points.")
@click.option("--min-speedup", type=click.FloatRange(min=0), default=1.5, show_default=True,
              help="INT8 budget: refuse when the budgeted U8S8 file, on --budget-backend, is slower than this many "
                   "times ONNX Runtime FP32 (CPU, batch 8).")
@click.option("--budget-backend", type=click.Choice(["ort", "openvino"]), default="ort", show_default=True,
              help="INT8 budget: where the U8S8 file is checked and timed, i.e. where it will be deployed (ONNX "
                   "Runtime CPU or OpenVINO CPU); speed-ups stay relative to ONNX Runtime FP32. ort also checks the "
                   "S8S8 (TensorRT) file, on ONNX Runtime; openvino checks only the U8S8 file OpenVINO runs.")
@click.option("--budget-fallback-precision", type=click.Choice(["fp32", "bf16"]), default="fp32", show_default=True,
              help="INT8 budget: what the layers kept out of INT8 run in on --budget-backend openvino (its inference "
                   "precision; deploy with --precision the same). bf16 needs a CPU with AMX-BF16 or AVX-512 BF16; "
                   "ONNX Runtime runs them in fp32.")
@click.option("--calibration-method", type=click.Choice(["auto", "minmax", "percentile", "entropy"]), default=None,
              help="INT8 budget: activation ranges from ONNX Runtime's calibrator. auto tries all three on "
                   "--budget-data before any layer falls back and keeps the one with the smallest error (mean "
                   "|Δlogit| vs FP32; per-class AP on a few hundred images is too noisy to choose by): three "
                   "calibration passes, each cached in its own der.calib[-METHOD].json. percentile and entropy "
                   "histogram every activation tensor, fed "
                   "one batch of 8 images at a time so that memory stays at one batch's activations whatever "
                   "--calib-max is; their time grows with the activations (pixels x channels x images), so on big "
                   "trunks pick one method to skip the other passes [default: auto with --budget-data; plain --int8 "
                   "uses minmax].")
@decode_option(None, "[default: the checkpoint's, from der-train --decode] For a model trained with full decoding, "
                     "check the change with der-eval --reference.")
@click.option("--cadm", is_flag=True, help="Add the 'cadm' output (N x C x h x w class activation maps, for heat maps).")
@click.option("--batch", "profile", default="1:32", show_default=True, callback=_profile,
              help="Batch range MIN:MAX or MIN:OPT:MAX (the TensorRT profile; ONNX batch is always dynamic).")
@click.option("--opset", type=click.IntRange(min=18), default=None, help="ONNX opset [default: the exporter's].")
@click.option("--samples", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder of images to verify on [default: --calib images, else generated inputs].")
@click.option("--trt", is_flag=True, help="Also build a TensorRT engine (FP16, or INT8 from the S8S8 file with --int8).")
@click.option("--workspace", type=click.FloatRange(min=0, min_open=True), default=None, help="TensorRT workspace in GB.")
@click.option("--timing-cache", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="TensorRT timing cache file (read if present, updated after the build).")
@click.option("--triton", "triton_repo", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Also write a Triton model repository here (MODEL may then be an .onnx or a .plan as is).")
@click.option("--triton-name", default="der", show_default=True, help="Triton model name (entry: NAME_e2e).")
@click.option("--triton-backend", type=click.Choice(["onnxruntime", "tensorrt", "openvino", "python"]), default=None,
              help="Engine step: Triton's native backend (openvino: Intel CPUs), or python (der_deploy.runtime in "
                   "Triton's Python backend) [default: tensorrt for a .plan, else onnxruntime].")
@click.option("--engine-backend", type=click.Choice(["ort", "openvino"]), default="ort", show_default=True,
              help="With --triton-backend python: what runs the .onnx inside the engine model.")
@click.option("--triton-precision", type=click.Choice(["fp32", "bf16"]), default="fp32", show_default=True,
              help="OpenVINO inference precision for --triton-backend openvino or --engine-backend openvino "
                   "(bf16 needs a CPU with native BF16: AMX or AVX512_BF16).")
@click.option("--max-batch", type=click.IntRange(min=1), default=None,
              help="Triton max_batch_size [default: MAX of the batch profile].")
@click.option("--instances", type=click.IntRange(min=1), default=1, show_default=True,
              help="Triton instances of the engine and preprocessing models.")
@click.option("--triton-max-pixels", type=click.IntRange(min=0), default=None,
              help="Largest decoded image (width x height) the served preprocessing model accepts; bigger uploads "
                   "get a 400 naming the limit (0: no limit) [default: 40000000, as der-infer].")
@handle_errors
def main(model, output, fp16, int8, calib, calib_max, budget_data, budget_split, max_map_drop, max_class_drop,
         min_speedup, decode, cadm, profile, opset, samples, trt, workspace, timing_cache,
         triton_repo, triton_name, triton_backend, engine_backend, triton_precision, max_batch, instances,
         triton_max_pixels, budget_backend, budget_fallback_precision, calibration_method):
    """Export a DER checkpoint (MODEL, from der-train) to verified ONNX; MODEL may be an .onnx with --fp16/--int8/--trt."""
    if int8 and calib is None:
        raise click.UsageError("--int8 needs --calib DIR (a folder of real images for calibration)")
    if calib is not None and not int8:
        raise click.UsageError("--calib is only used with --int8")
    if budget_data is not None and not int8:
        raise click.UsageError("--budget-data sets an INT8 accuracy budget; add --int8 --calib DIR")
    budget = None if budget_data is None else dict(data=budget_data, split=budget_split, max_map_drop=max_map_drop,
                                                   max_class_drop=max_class_drop, min_speedup=min_speedup,
                                                   **_budget_options(budget_backend, budget_fallback_precision,
                                                                     calibration_method))
    if budget is None and (budget_backend != "ort" or budget_fallback_precision != "fp32"
                           or calibration_method not in (None, "minmax")):
        raise click.UsageError("--budget-backend, --budget-fallback-precision and --calibration-method (other than "
                               "minmax) tune the INT8 budget search; add --budget-data DATA")
    if trt and budget is not None and budget_backend != "ort":
        raise click.UsageError("--budget-backend openvino checks only the file OpenVINO runs; for a TensorRT engine use "
                               "--budget-backend ort, which also checks the S8S8 file TensorRT builds from")
    if not trt and (workspace is not None or timing_cache is not None):
        raise click.UsageError("--workspace and --timing-cache are TensorRT options; add --trt")
    triton = _triton_args(model, triton_repo, triton_name, triton_backend, max_batch, instances, trt, engine_backend,
                          triton_precision, triton_max_pixels,
                          variants=fp16 or int8 or trt)
    if triton is not None and model.suffix.lower() in (".plan", ".engine"):
        return _write_triton(model, **triton)
    from_onnx = model.suffix.lower() == ".onnx"
    if from_onnx and triton is not None and not (fp16 or int8 or trt):
        return _write_triton(model, **triton)
    if from_onnx and not (fp16 or int8 or trt):
        raise click.UsageError(f"{model} is already ONNX; add --fp16, --int8 or --trt to make a variant of it")
    if from_onnx and (cadm or opset is not None or decode is not None):
        raise click.UsageError("--cadm, --opset and --decode apply to a checkpoint export, not to an existing .onnx")

    from der_deploy.fileio import check_writable

    trt_export = _load_tensorrt() if trt else None  # fail before minutes of work
    base = output if output is not None else (model if from_onnx else Path("der.onnx"))
    from der_deploy.artifact.variants import variant_paths
    from der_deploy.export.chain import Row, export_chain

    names = variant_paths(base)
    want_fp16 = fp16 or (trt and not int8)
    wanted = ([] if from_onnx else ["fp32"]) + (["fp16"] if want_fp16 else []) + (["int8", "calib"] if int8 else [])
    # The S8S8 (TensorRT) file is written for --trt, and with an ORT budget (which checks it too); an OpenVINO
    # budget checks only the U8S8 file it deploys, so it would leave an unchecked S8S8 file behind.
    s8s8 = int8 and (trt or (budget is not None and budget.get("backend", "ort") == "ort"))
    wanted += (["s8s8"] if s8s8 else []) + (["plan"] if trt else [])
    for key in wanted:
        check_writable(names[key])
    if timing_cache is not None:
        check_writable(timing_cache)
    if int8:  # an empty or missing calibration folder must fail before anything is written
        from der_deploy.export.calibration import calibration_images

        calibration_images(calib, calib_max)
    if not model.is_file():
        from der_deploy.errors import CheckpointError

        raise CheckpointError(f"{model}: no such file; pass a checkpoint written by der-train (or an .onnx)")
    rows = export_chain(model, names, fp16=want_fp16, int8=int8, s8s8=s8s8,
                        calib=calib, calib_max=calib_max, cadm=cadm, decode=decode, profile=profile, opset=opset, samples=samples,
                        budget=budget)
    if trt_export is not None:
        src = names["s8s8"] if int8 else names["fp16"]
        t0 = time.perf_counter()
        plan = trt_export.build_engine(src, names["plan"], precision="int8" if int8 else "fp16", profile=profile,
                                       workspace=workspace, timing_cache=timing_cache)
        rows.append(Row(Path(plan), f"TensorRT {'int8' if int8 else 'fp16'} {profile}", time.perf_counter() - t0))
    _summary(rows)
    if triton is not None:
        use_plan = triton["backend"] == "tensorrt"
        _write_triton(names["plan"] if use_plan else (model if from_onnx else names["fp32"]), **triton)


def _budget_options(backend: str, fallback_precision: str, calibration: str | None) -> dict:
    """The budget search's backend and calibration options, checked before any export work (bf16 on a CPU without
    native BF16 is one line here, not minutes later)."""
    from der_deploy.export.budget_backends import check_budget_backend

    if backend == "ort" and fallback_precision != "fp32":
        raise click.UsageError(f"--budget-fallback-precision {fallback_precision} needs --budget-backend openvino "
                               "(ONNX Runtime runs the layers kept out of INT8 in fp32)")
    check_budget_backend(backend, fallback_precision)
    return {"backend": backend, "fallback_precision": fallback_precision, "calibration": calibration or "auto"}


def _triton_args(model, repo, name, backend, max_batch, instances, trt, engine_backend, precision, max_pixels,
                 variants) -> dict | None:
    """Validate the --triton options up front (before minutes of export); None without --triton."""
    if repo is None:
        if (backend is not None or max_batch is not None or instances != 1 or name != "der" or engine_backend != "ort"
                or precision != "fp32" or max_pixels is not None):
            raise click.UsageError("--triton-name, --triton-backend, --engine-backend, --triton-precision, --max-batch, "
                                   "--instances and --triton-max-pixels need --triton REPO")
        if model.suffix.lower() in (".plan", ".engine"):
            raise click.UsageError(f"{model} is a TensorRT plan; der-export uses it only to write --triton REPO")
        return None
    is_plan = model.suffix.lower() in (".plan", ".engine")
    if is_plan and variants:
        raise click.UsageError("a .plan MODEL can only be written into --triton REPO; drop --fp16/--int8/--trt")
    if backend == "tensorrt" and not (is_plan or trt):
        raise click.UsageError("--triton-backend tensorrt serves a TensorRT plan: add --trt, or give the .plan as MODEL")
    if engine_backend != "ort" and backend != "python":
        raise click.UsageError("--engine-backend chooses what runs the .onnx inside the Python-backend engine model; "
                               "add --triton-backend python (or use --triton-backend openvino for Triton's own)")
    if precision != "fp32" and not (backend == "openvino" or engine_backend == "openvino"):
        raise click.UsageError(f"--triton-precision {precision} is OpenVINO's inference precision; use --triton-backend "
                               "openvino, or --triton-backend python --engine-backend openvino")
    from der_deploy.serve.repository import _pb2

    _pb2()  # tritonclient (Triton's config schema) must be there before any export work
    return {"repo": repo, "name": name, "backend": backend, "max_batch": max_batch, "instances": instances,
            "engine_backend": engine_backend, "precision": precision, "max_pixels": max_pixels}


def _write_triton(engine: Path, *, repo, name, backend, max_batch, instances, engine_backend, precision,
                  max_pixels) -> None:
    from der_deploy.serve.repository import describe, write_repository

    rep = write_repository(engine, repo, name=name, backend=backend, max_batch=max_batch, instances=instances,
                           engine_backend=engine_backend, precision=precision, max_pixels=max_pixels)
    click.echo("\n".join(describe(rep)))
    click.echo(f"serve it: der-serve {repo}    query it: der-infer --triton 127.0.0.1:8000 IMAGES...")


def _summary(rows: list) -> None:
    from der_deploy.fileio import human_size
    from der_deploy.progress import out_console, table

    out = []
    for r in rows:
        res = r.result
        if res is not None and res.outputs:
            lo = next((o for o in res.outputs if o.name == "logits"), res.outputs[0])
            err = (f"{lo.max_abs:.2g}", f"{lo.mean_abs:.2g}", "pass" if res.passed else "FAIL")
        else:
            err = ("-", "-", "-")
        size = human_size(r.path.stat().st_size) if r.path.exists() else "-"
        out.append((r.path.name, r.precision, size, f"{r.seconds:.1f} s", *err))
    folders = sorted({str(r.path.parent) for r in rows})
    t = table(f"der-export -> {', '.join(folders)}", ("file", "precision", "size", "time", "logits max err", "logits mean err", "verified"), out)
    t.columns[0].no_wrap = True  # file names are what users copy; never cut them
    t.columns[0].min_width = max(len(r[0]) for r in out)
    out_console.print(t)
