"""der-export as users run it (subprocess): bad inputs give one line, non-zero exit, no file; --batch parsing."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from der_deploy.artifact.card import ModelCard
from der_deploy.artifact.variants import variant_paths
from der_deploy.cli.export import main
from der_deploy.errors import DerError
from der_deploy.artifact.profile import BatchProfile, parse_profile
from der_deploy.train.checkpoint import save_checkpoint
from der_deploy.train.model import DER

DER_EXPORT = str(Path(sys.executable).with_name("der-export"))


def run(*args, cwd):
    env = dict(os.environ, DER_NO_PROGRESS="1")
    return subprocess.run([DER_EXPORT, *map(str, args)], cwd=cwd, capture_output=True, text=True, env=env, timeout=600)


def assert_one_line_error(proc, pattern):
    assert proc.returncode != 0
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    import re

    assert re.search(pattern, lines[0]), lines[0]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    torch.manual_seed(0)
    model = DER(3, "resnet18", input_size=(64, 64)).eval()
    card = ModelCard(classes=["a", "b", "c"], arch="resnet18", input_size=(64, 64))
    return save_checkpoint(tmp_path_factory.mktemp("cli") / "m.pt", model, card)


def test_not_a_checkpoint(tmp_path):
    bad = tmp_path / "notes.pt"
    bad.write_text("hello")
    proc = run(bad, "-o", "der.onnx", cwd=tmp_path)
    assert_one_line_error(proc, r"notes\.pt: not a der-deploy checkpoint")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.pt"]


def test_unknown_architecture(tmp_path, ckpt):
    data = torch.load(ckpt, weights_only=True)
    data["arch"] = "resnet200"  # vgg16 is a known --arch since train/backbones.py
    torch.save(data, tmp_path / "vgg.pt")
    proc = run("vgg.pt", cwd=tmp_path)
    assert_one_line_error(proc, r"unknown architecture 'resnet200'")
    assert not (tmp_path / "der.onnx").exists()


def test_missing_keys(tmp_path, ckpt):
    data = torch.load(ckpt, weights_only=True)
    data["state_dict"] = {k: v for k, v in data["state_dict"].items() if not k.startswith("classifier")}
    torch.save(data, tmp_path / "cut.pt")
    proc = run("cut.pt", "-o", "out/der.onnx", cwd=tmp_path)
    assert_one_line_error(proc, r"missing keys classifier")
    assert not (tmp_path / "out" / "der.onnx").exists()


def test_unwritable_output(tmp_path, ckpt):
    (tmp_path / "file").write_text("")
    proc = run(ckpt, "-o", tmp_path / "file" / "der.onnx", cwd=tmp_path)
    assert_one_line_error(proc, r"cannot create folder|not writable")


def test_calibration_folder_without_images(tmp_path, ckpt):
    (tmp_path / "calib").mkdir()
    (tmp_path / "calib" / "readme.txt").write_text("no images here")
    proc = run(ckpt, "--int8", "--calib", "calib", cwd=tmp_path)
    assert_one_line_error(proc, r"no images in calib")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["calib"]


def test_usage_errors_in_process(tmp_path, ckpt):
    r = CliRunner().invoke(main, [str(ckpt), "--int8"])
    assert r.exit_code == 2 and "--int8 needs --calib" in r.output
    r = CliRunner().invoke(main, [str(ckpt), "--batch", "8:2"])
    assert r.exit_code == 2 and "1 <= MIN <= OPT <= MAX" in r.output
    r = CliRunner().invoke(main, [str(ckpt), "--workspace", "2"])
    assert r.exit_code == 2 and "add --trt" in r.output


def test_trt_unavailable_is_one_line_and_writes_nothing(tmp_path, ckpt):
    try:
        import tensorrt  # noqa: F401
        pytest.skip("tensorrt is installed here; the TensorRT tests cover --trt")
    except ImportError:
        pass
    proc = run(ckpt, "--trt", cwd=tmp_path)
    assert_one_line_error(proc, r"TensorRT")
    assert list(tmp_path.iterdir()) == []


def test_variant_names():
    n = variant_paths(Path("out/der.onnx"))
    assert n["fp16"] == Path("out/der.fp16.onnx") and n["int8"] == Path("out/der.int8.onnx")
    assert n["s8s8"] == Path("out/der.int8-s8s8.onnx") and n["plan"] == Path("out/der.plan")
    assert n["calib"] == Path("out/der.calib.json")


@pytest.mark.parametrize("text,expected", [
    ("32", (1, 32, 32)), ("4:16", (4, 16, 16)), ("1:8:32", (1, 8, 32)), (" 2:2:2 ", (2, 2, 2)), (8, (1, 8, 8)),
])
def test_parse_profile(text, expected):
    assert parse_profile(text).as_tuple() == expected


@pytest.mark.parametrize("text,match", [
    ("0", "1 <= MIN"), ("8:4", "1 <= MIN"), ("1:64:32", "1 <= MIN"), ("a:b", "whole numbers"),
    ("1:2:3:4", "4 fields"), ("", "whole numbers"),
])
def test_parse_profile_errors(text, match):
    with pytest.raises(ValueError, match=match):
        parse_profile(text)
    with pytest.raises(DerError):
        parse_profile(text)


def test_batch_profile_validates_directly():
    assert str(BatchProfile(1, 4, 8)) == "1:4:8"
    with pytest.raises(DerError):
        BatchProfile(2, 1, 8)


@pytest.mark.slow
def test_full_export_writes_verified_variants(tmp_path, ckpt):
    from PIL import Image
    import numpy as np

    calib = tmp_path / "calib"
    calib.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (72, 72, 3), dtype=np.uint8)).save(calib / f"{i}.png")
    proc = run(ckpt, "-o", "out/der.onnx", "--fp16", "--int8", "--calib", "calib", "--cadm", "--batch", "1:8", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["der.calib.json", "der.fp16.onnx", "der.int8.onnx", "der.onnx"]
    assert "der.int8.onnx" in proc.stdout and proc.stdout.count("pass") == 3
    # an existing .onnx as MODEL: the variant is verified against the FP32 ONNX
    proc = run(out / "der.onnx", "--fp16", "-o", tmp_path / "again" / "x.onnx", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "again" / "x.fp16.onnx").is_file() and not (tmp_path / "again" / "x.onnx").exists()


def test_decode_override_goes_into_every_card(tmp_path, ckpt):
    """--decode replaces the checkpoint card's image decoding in each file written; default: the checkpoint's."""
    from der_deploy.artifact.files import read_card

    runner = CliRunner()
    r = runner.invoke(main, [str(ckpt), "-o", str(tmp_path / "d.onnx"), "--fp16", "--decode", "draft"])
    assert r.exit_code == 0, r.output
    assert read_card(tmp_path / "d.onnx").decode == read_card(tmp_path / "d.fp16.onnx").decode == "draft"
    r = runner.invoke(main, [str(ckpt), "-o", str(tmp_path / "f.onnx")])
    assert r.exit_code == 0, r.output
    assert read_card(tmp_path / "f.onnx").decode == "full"
    r = runner.invoke(main, [str(tmp_path / "f.onnx"), "--fp16", "--decode", "draft"])
    assert r.exit_code == 2 and "--decode apply to a checkpoint export" in r.output
    r = runner.invoke(main, [str(ckpt), "--decode", "thumbnail"])
    assert r.exit_code == 2 and "'thumbnail' is not one of 'full', 'draft'" in r.output
