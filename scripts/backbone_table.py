"""The backbone table of issue 17: per --arch, deployed parameters, MACs, ONNX Runtime FP32 / INT8 img/s at 224 and
448 px (random weights: speed does not depend on them), and the INT8 ΔmAP of a tiny model trained here.

    .venv/bin/python scripts/backbone_table.py [--workdir build/backbone-table] [--json table.json]
        [--archs resnet18,...] [--sizes 224,448] [--skip ARCH@SIZE,...] [--batch 1] [--seconds 3]
        [--no-speed] [--no-accuracy]

Every finished cell is kept in WORKDIR/cells.json, so a stopped run resumes where it was (delete it to re-measure).
Speed: der-export's FP32 ONNX (no verification: random weights) and INT8 U8S8 (calibrated on 8 generated images),
each timed by der-bench's worker (its own process, random inputs, ORT's default threads, 1 warm-up run, then
iterations until --seconds have passed and at least 3 ran); whether der-export's FP16 conversion takes the trunk
(the first size's file). MACs: Conv2d and Linear of the trunk (hooks on one
forward pass) plus the fused head's C·d·(h·w + 1); element-wise ops are not counted. Accuracy: der-train's recipe
at 64 px for 3 epochs on generated data (4 classes, 320 images, half of them test), precise BatchNorm statistics
(train/batchnorm.py), then der-eval's parity of the INT8 file against the checkpoint on the test split.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ARCHS = ("resnet18", "resnet50", "vgg16", "mobilenet_v3_small", "efficientnet_b0", "convnext_tiny", "regnet_y_400mf")
SPEED_CLASSES = 20  # VOC's
TINY = dict(classes=4, images=320, image_size=72, test_fraction=0.5, input_size=(64, 64), epochs=3, batch_size=16,
            lr=0.01, lr_step=2, seed=0)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Cells:
    """Finished measurements by key, on disk after each one."""

    def __init__(self, path: Path):
        self.path = path
        self.data = json.loads(path.read_text()) if path.exists() else {}

    def get(self, key: str, make):
        if key not in self.data:
            t0 = time.perf_counter()
            value = make()
            value["seconds"] = round(time.perf_counter() - t0, 1)
            self.data[key] = value
            self.path.write_text(json.dumps(self.data, indent=1))
        return self.data[key]


def count(arch: str, size: int) -> dict:
    import torch

    from der_deploy.train.model import DER

    model = DER(SPEED_CLASSES, arch, input_size=(size, size)).eval()
    macs = [0]

    def hook(mod, inp, out):
        if isinstance(mod, torch.nn.Conv2d):
            macs[0] += out.numel() * (mod.in_channels // mod.groups) * mod.kernel_size[0] * mod.kernel_size[1]
        else:  # Linear on the last dimension (ConvNeXt's channels-last MLPs)
            macs[0] += out.numel() * mod.in_features

    handles = [m.register_forward_hook(hook) for m in model.backbone.modules()
               if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    with torch.no_grad():
        X = model.forward_features(torch.zeros(1, 3, size, size))
    for h in handles:
        h.remove()
    d, h, w = X.shape[1:]
    head = SPEED_CLASSES * d * (h * w + 1)  # CADMs θᵀX (stream 2) + GMP-FC (stream 1)
    deployed = sum(p.numel() for p in [*model.backbone.parameters(), *model.classifier.parameters()])
    return {"params_m": deployed / 1e6, "gmacs": (macs[0] + head) / 1e9, "map": [int(h), int(w)]}


def _bench(path: Path, size: int, batch: int, seconds: float) -> float:
    spec = {"kind": "ort", "path": str(path), "input_size": [size, size], "batches": [batch], "warmup": 1,
            "iters": 1000, "max_seconds": seconds}
    out = subprocess.run([sys.executable, "-m", "der_deploy.tools.bench_worker", json.dumps(spec)],
                         capture_output=True, text=True, timeout=900)
    row = json.loads(out.stdout.strip().splitlines()[-1])
    if "error" in row:
        raise RuntimeError(f"{path}: {row['error']}")
    return row["batches"][str(batch)]["img_s"]


def speed(arch: str, size: int, work: Path, calib: Path, batch: int, seconds: float) -> dict:
    import torch

    from der_deploy.artifact.card import ModelCard
    from der_deploy.export.onnx_export import export_onnx
    from der_deploy.export.quantize import quantize_int8
    from der_deploy.train.model import DER

    folder = work / "speed" / f"{arch}-{size}"
    folder.mkdir(parents=True, exist_ok=True)
    fp32, int8 = folder / "der.onnx", folder / "der.int8.onnx"
    if not int8.exists():
        torch.manual_seed(0)
        model = DER(SPEED_CLASSES, arch, input_size=(size, size)).eval()
        card = ModelCard(classes=[f"c{i}" for i in range(SPEED_CLASSES)], arch=arch, input_size=(size, size))
        t0 = time.perf_counter()
        export_onnx((model, card), fp32, batch=(1, 8), verify=False)
        t1 = time.perf_counter()
        quantize_int8(fp32, int8, calib, calib_max=8)
        log(f"{arch}@{size}: export {t1 - t0:.0f} s, INT8 calibration {time.perf_counter() - t1:.0f} s")
    return {"fp32_img_s": _bench(fp32, size, batch, seconds), "int8_img_s": _bench(int8, size, batch, seconds),
            "batch": batch, "load": os.getloadavg()[0]}


def fp16_support(arch: str, work: Path, size: int) -> dict:
    """Does der-export's FP16 conversion take this trunk? (the speed cell's FP32 file; "ok" or the refusal)"""
    from der_deploy.errors import DerError
    from der_deploy.export.precision import convert_fp16

    folder = work / "speed" / f"{arch}-{size}"
    try:
        convert_fp16(folder / "der.onnx", folder / "der.fp16.onnx")
        return {"fp16": "ok"}
    except DerError as err:
        return {"fp16": str(err).split(";")[0]}


def accuracy(arch: str, work: Path, data: Path) -> dict:
    from der_deploy.datasets import open_dataset
    from der_deploy.export.onnx_export import export_onnx
    from der_deploy.export.quantize import quantize_int8
    from der_deploy.tools.evaluate import evaluate
    from der_deploy.train.batchnorm import recalibrate_batchnorm
    from der_deploy.train.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
    from der_deploy.train.engine import TrainConfig, train

    folder = work / "accuracy" / arch
    folder.mkdir(parents=True, exist_ok=True)
    ckpt = folder / "model.pt"
    keys = ("input_size", "epochs", "batch_size", "lr", "lr_step", "seed")
    result = train(TrainConfig(data=data, output=folder / "train.pt", arch=arch, workers=0,
                               **{k: TINY[k] for k in keys}))
    raw = read_checkpoint(result.last_path)
    model, card = load_checkpoint(result.last_path, data=raw)
    n = recalibrate_batchnorm(model, open_dataset(data, "trainval"), card)
    save_checkpoint(ckpt, model, card, config=raw["config"], metrics=raw["metrics"], epoch=raw["epoch"],
                    precise_bn_images=n)
    fp32 = export_onnx(ckpt, folder / "der.onnx", batch=(1, 16))
    int8 = quantize_int8(fp32, folder / "der.int8.onnx", list(open_dataset(data, "trainval").paths), calib_max=64)
    report = evaluate(int8, data, split="test", reference=ckpt)
    p = report.parity
    return {"fp32_map": p.reference_map, "int8_map": report.map, "delta_map_pt": p.delta_map_pt,
            "worst_class": p.worst_class, "worst_delta_ap_pt": p.worst_delta_ap_pt, "precise_bn_images": n,
            "last_epoch_val_map": raw["metrics"]["map"]}


def table(cells: dict, archs, sizes, skip) -> str:
    def cell(key, field, fmt):
        v = cells.get(key, {}).get(field)
        return "-" if v is None else format(v, fmt)

    head = ["arch", "params (M)", *(f"GMACs {s}" for s in sizes)]
    for s in sizes:
        head += [f"FP32 img/s {s}", f"INT8 img/s {s}", f"INT8/FP32 {s}"]
    head += ["FP32 mAP (64 px)", "INT8 ΔmAP (pt)", "largest |class ΔAP| (pt)", "der-export --fp16"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for arch in archs:
        row = [arch, cell(f"count/{arch}/{sizes[0]}", "params_m", ".2f")]
        row += [cell(f"count/{arch}/{s}", "gmacs", ".3g") for s in sizes]
        for s in sizes:
            sp = cells.get(f"speed/{arch}/{s}")
            if f"{arch}@{s}" in skip or sp is None:
                row += ["skipped" if f"{arch}@{s}" in skip else "-"] * 3
            else:
                ratio = sp["int8_img_s"] / sp["fp32_img_s"]
                row += [f"{sp['fp32_img_s']:.1f}", f"{sp['int8_img_s']:.1f}", f"{ratio:.2f}x"]
        acc = f"accuracy/{arch}"
        row += [f"{100 * cells[acc]['fp32_map']:.2f}" if acc in cells else "-", cell(acc, "delta_map_pt", "+.2f"),
                (f"{cells[acc]['worst_class']} {cells[acc]['worst_delta_ap_pt']:+.2f}" if acc in cells else "-"),
                cells.get(f"fp16/{arch}", {}).get("fp16", "-")]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", type=Path, default=Path("build/backbone-table"))
    ap.add_argument("--archs", default=",".join(ARCHS))
    ap.add_argument("--sizes", default="224,448")
    ap.add_argument("--skip", default="", help="ARCH@SIZE cells not timed, e.g. vgg16@448")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=3.0, help="timing per cell (after one warm-up run)")
    ap.add_argument("--no-speed", action="store_true")
    ap.add_argument("--no-accuracy", action="store_true")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    os.environ.setdefault("DER_NO_PROGRESS", "1")
    archs, sizes = args.archs.split(","), [int(s) for s in args.sizes.split(",")]
    skip = {s for s in args.skip.split(",") if s}
    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    cells = Cells(work / "cells.json")

    from der_deploy.synth import generate

    data = work / "data"
    if not (data / ".complete").exists():
        generate(data, classes=TINY["classes"], images=TINY["images"], seed=7, size=TINY["image_size"],
                 test_fraction=TINY["test_fraction"], overwrite=True)
        (data / ".complete").touch()
    calib = data / "JPEGImages"
    for arch in archs:
        for s in sizes:
            cells.get(f"count/{arch}/{s}", lambda: count(arch, s))
    if not args.no_accuracy:
        for arch in archs:
            log(f"accuracy {arch}")
            cells.get(f"accuracy/{arch}", lambda: accuracy(arch, work, data))
    if not args.no_speed:
        for arch in archs:
            for s in sizes:
                if f"{arch}@{s}" not in skip:
                    log(f"speed {arch}@{s}")
                    cells.get(f"speed/{arch}/{s}", lambda: speed(arch, s, work, calib, args.batch, args.seconds))
            if f"{arch}@{sizes[0]}" not in skip:
                cells.get(f"fp16/{arch}", lambda: fp16_support(arch, work, sizes[0]))
    text = table(cells.data, archs, sizes, skip)
    print(text)
    if args.json:
        args.json.write_text(json.dumps({"cells": cells.data, "table": text}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
