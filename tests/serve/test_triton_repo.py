"""der-export --triton: every config.pbtxt parses against Triton's own ModelConfig proto and says what the
engine file says (names, dtypes, dims read back independently with onnx); the ensemble is wired to tensors
that exist; bytes and files share one decoder. No server here (tests/serve/test_triton_server.py has one)."""
from __future__ import annotations

import io
import json
import os

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

pytest.importorskip("tritonclient.grpc.model_config_pb2")

from google.protobuf import text_format  # noqa: E402
from tritonclient.grpc import model_config_pb2 as pb2  # noqa: E402

from der_deploy.artifact.card import ModelCard  # noqa: E402
from der_deploy.errors import ExportError, ImageError  # noqa: E402
from der_deploy.serve.repository import write_repository  # noqa: E402

ONNX_TYPES = {1: pb2.TYPE_FP32, 7: pb2.TYPE_INT64}


def configs(repo):
    """Model name -> ModelConfig parsed from the written text with text_format (what Triton does)."""
    out = {}
    for path in sorted(repo.glob("*/config.pbtxt")):
        cfg = text_format.Parse(path.read_text(), pb2.ModelConfig())
        assert cfg.name == path.parent.name  # Triton requires the folder name
        out[cfg.name] = cfg
    return out


def onnx_io(path):
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    def rows(values):
        return [(v.name, ONNX_TYPES[v.type.tensor_type.elem_type],
                 [d.dim_value if d.HasField("dim_value") else -1 for d in v.type.tensor_type.shape.dim][1:])
                for v in values]
    return rows(m.graph.input), rows(m.graph.output)


def io_of(tensors):
    return [(t.name, t.data_type, list(t.dims)) for t in tensors]


def check_ensemble(cfgs, name="der"):
    """Every step names a model of the repository and only tensors those models declare."""
    ens = cfgs[name + "_e2e"]
    assert ens.platform == "ensemble"
    produced = {t.name for t in ens.input}
    for step in ens.ensemble_scheduling.step:
        model = cfgs[step.model_name]
        assert set(step.input_map) <= {t.name for t in model.input}
        assert set(step.input_map.values()) <= produced  # fed by the request or an earlier step
        assert set(step.output_map) <= {t.name for t in model.output}
        produced |= set(step.output_map.values())
        assert model.max_batch_size >= ens.max_batch_size
    assert {t.name for t in ens.output} <= produced
    assert [s.model_name for s in ens.ensemble_scheduling.step] == [name + "_preprocess", name, name + "_postprocess"]


@pytest.mark.parametrize("backend", ["onnxruntime", "python"])
def test_onnx_repository_configs_parse_and_match_the_file(tiny_onnx, tmp_path, backend):
    rep = write_repository(tiny_onnx, tmp_path / "repo", backend=backend, max_batch=16, instances=3)
    cfgs = configs(rep.root)
    assert set(cfgs) == {"der", "der_preprocess", "der_postprocess", "der_e2e"}
    eng = cfgs["der"]
    ins, outs = onnx_io(tiny_onnx)
    assert io_of(eng.input) == ins and io_of(eng.output) == outs  # includes the cadm output of this export
    assert eng.max_batch_size == 16
    assert list(eng.dynamic_batching.preferred_batch_size) == [16]  # the export's OPT (32) capped by --max-batch
    assert eng.instance_group[0].count == 3
    card = ModelCard.load(rep.root / "card.json")
    assert card.classes and (rep.root / "der" / "labels.txt").read_text().splitlines() == card.classes
    assert [o.label_filename for o in eng.output if o.name == "scores"] == ["labels.txt"]
    if backend == "onnxruntime":
        assert eng.platform == "onnxruntime_onnx" and not eng.backend
        assert eng.instance_group[0].kind == pb2.ModelInstanceGroup.KIND_AUTO  # GPU when the server has one, else CPU
        assert not (rep.root / "der" / "1" / "model.py").exists()
    else:
        assert eng.backend == "python" and eng.parameters["der_engine_file"].string_value == "model.onnx"
        assert "der_deploy.serve.models import Engine" in (rep.root / "der" / "1" / "model.py").read_text()
    assert (rep.root / "der" / "1" / "model.onnx").read_bytes() == tiny_onnx.read_bytes()
    for name, cfg in cfgs.items():  # the card travels in every config, identical to card.json
        assert ModelCard.from_json(cfg.parameters["der_card"].string_value) == card, name
    pre = cfgs["der_preprocess"]
    assert io_of(pre.input) == [("image", pb2.TYPE_STRING, [1])]
    assert io_of(pre.output) == [("images", pb2.TYPE_FP32, [3, *card.input_size])]
    check_ensemble(cfgs)
    assert not [p for p in rep.root.iterdir() if p.name.startswith(".")]  # no staging left behind


def test_default_max_batch_is_the_export_profile(tiny_onnx, tmp_path):
    cfgs = configs(write_repository(tiny_onnx, tmp_path / "r").root)
    assert cfgs["der"].max_batch_size == 32  # tiny_onnx was exported with der-export's default --batch 1:32
    assert cfgs["der_e2e"].max_batch_size == 32


def test_plan_repository(tiny_onnx, tmp_path, fake_plan):
    card = ModelCard.load(write_repository(tiny_onnx, tmp_path / "o").root / "card.json")
    plan = fake_plan(tmp_path / "p", card, lo=1, opt=4, hi=8, onnx=tiny_onnx)
    rep = write_repository(plan, tmp_path / "repo")
    cfgs = configs(rep.root)
    eng = cfgs["der"]
    assert eng.platform == "tensorrt_plan" and eng.max_batch_size == 8
    assert list(eng.dynamic_batching.preferred_batch_size) == [4, 8]  # OPT and MAX of the plan's profile
    assert eng.instance_group[0].kind == pb2.ModelInstanceGroup.KIND_GPU
    ins, outs = onnx_io(tiny_onnx)
    assert io_of(eng.input) == ins and io_of(eng.output) == outs
    assert (rep.root / "der" / "1" / "model.plan").read_bytes() == plan.read_bytes()
    side = json.loads((rep.root / "der" / "1" / "model.plan.json").read_text())
    assert side["card"] == card.to_dict()
    check_ensemble(cfgs)
    # Without its ONNX beside it the I/O are der-export's contract (no cadm), with a note saying so.
    os.remove(tmp_path / "p" / "der.fp16.onnx")
    rep2 = write_repository(plan, tmp_path / "repo2", max_batch=2)
    eng2 = configs(rep2.root)["der"]
    c = card.num_classes
    assert io_of(eng2.output) == [("logits", pb2.TYPE_FP32, [c]), ("scores", pb2.TYPE_FP32, [c])]
    assert eng2.max_batch_size == 2 and list(eng2.dynamic_batching.preferred_batch_size) == [2]
    assert any("contract" in n for n in rep2.spec.notes)
    # The Python-backend engine runs the plan with der_deploy.runtime's TensorRT runner, on a GPU instance.
    rep3 = write_repository(plan, tmp_path / "repo3", backend="python")
    eng3 = configs(rep3.root)["der"]
    assert eng3.backend == "python" and eng3.parameters["der_engine_file"].string_value == "model.plan"
    assert eng3.instance_group[0].kind == pb2.ModelInstanceGroup.KIND_GPU
    assert {p.name for p in (rep3.root / "der" / "1").iterdir()} == {"model.plan", "model.plan.json", "model.py"}


def test_bad_requests_are_refused(tiny_onnx, tmp_path, fake_plan):
    with pytest.raises(ExportError, match="outside the engine's batch range 1..32"):
        write_repository(tiny_onnx, tmp_path / "r", max_batch=64)
    with pytest.raises(ExportError, match="needs a TensorRT plan"):
        write_repository(tiny_onnx, tmp_path / "r", backend="tensorrt")
    with pytest.raises(ExportError, match="model name"):
        write_repository(tiny_onnx, tmp_path / "r", name="../x")
    card = ModelCard(classes=["a", "b"], arch="resnet18", input_size=(32, 32))
    with pytest.raises(ExportError, match="Triton sends batches from 1"):
        write_repository(fake_plan(tmp_path / "p", card, lo=2, opt=4, hi=8), tmp_path / "r")
    assert not (tmp_path / "r" / "der").exists()


def test_rewrite_replaces_models_and_keeps_others(tiny_onnx, tmp_path):
    repo = tmp_path / "repo"
    (repo / "other" / "1").mkdir(parents=True)
    write_repository(tiny_onnx, repo, backend="python")
    (repo / "der" / "1" / "stale.txt").write_text("x")
    write_repository(tiny_onnx, repo, backend="onnxruntime")
    assert configs(repo)["der"].platform == "onnxruntime_onnx"
    assert not (repo / "der" / "1" / "stale.txt").exists() and (repo / "other" / "1").is_dir()


def test_der_export_cli_from_onnx_and_plan(tiny_onnx, tmp_path, fake_plan):
    from der_deploy.cli.export import main

    r = CliRunner().invoke(main, [str(tiny_onnx), "--triton", str(tmp_path / "a"), "--triton-backend", "python",
                                  "--triton-name", "m", "--max-batch", "4", "--instances", "2"])
    assert r.exit_code == 0, r.output
    cfgs = configs(tmp_path / "a")
    assert set(cfgs) == {"m", "m_preprocess", "m_postprocess", "m_e2e"} and cfgs["m"].max_batch_size == 4
    check_ensemble(cfgs, "m")
    assert "m_e2e" in r.output
    card = ModelCard.load(tmp_path / "a" / "card.json")
    plan = fake_plan(tmp_path / "p", card)
    r = CliRunner().invoke(main, [str(plan), "--triton", str(tmp_path / "b")])
    assert r.exit_code == 0, r.output
    assert configs(tmp_path / "b")["der"].platform == "tensorrt_plan"
    r = CliRunner().invoke(main, [str(plan)])
    assert r.exit_code == 2 and "only to write --triton" in r.output
    r = CliRunner().invoke(main, [str(tiny_onnx), "--max-batch", "4"])
    assert r.exit_code == 2 and "need --triton REPO" in r.output


@pytest.mark.slow
def test_der_export_cli_from_checkpoint(trained_ckpt, tmp_path):
    from der_deploy.cli.export import main

    r = CliRunner().invoke(main, [str(trained_ckpt), "-o", str(tmp_path / "m.onnx"), "--batch", "1:4:16",
                                  "--triton", str(tmp_path / "repo")])
    assert r.exit_code == 0, r.output
    cfgs = configs(tmp_path / "repo")
    assert cfgs["der"].platform == "onnxruntime_onnx" and cfgs["der"].max_batch_size == 16
    assert list(cfgs["der"].dynamic_batching.preferred_batch_size) == [4, 16]
    assert (tmp_path / "repo" / "der" / "1" / "model.onnx").read_bytes() == (tmp_path / "m.onnx").read_bytes()


def _png_rgba():
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (20, 30, 4), dtype=np.uint8), "RGBA").save(buf, "PNG")
    return buf.getvalue()


def _png_16bit():
    buf = io.BytesIO()
    Image.fromarray((np.arange(600, dtype=np.uint16).reshape(20, 30) * 100).astype(np.uint16)).save(buf, "PNG")
    return buf.getvalue()


def _jpeg_exif_rotated():
    img = Image.fromarray(np.random.default_rng(1).integers(0, 256, (16, 24, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 CW to view
    buf = io.BytesIO()
    img.save(buf, "JPEG", exif=exif)
    return buf.getvalue()


@pytest.mark.parametrize("make", [_png_rgba, _png_16bit, _jpeg_exif_rotated])
def test_bytes_and_files_decode_identically(tmp_path, make):
    from der_deploy.images import decode_image, load_image

    data = make()
    path = tmp_path / "x.img"
    path.write_bytes(data)
    a, b = load_image(path), decode_image(data, "item")
    assert a.mode == b.mode == "RGB" and a.size == b.size
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    if make is _jpeg_exif_rotated:
        assert a.size == (16, 24)  # upright: EXIF applied on both paths


def test_decode_errors_name_the_item():
    from der_deploy.images import decode_image

    with pytest.raises(ImageError, match=r"^request item 3: empty \(0 bytes\)"):
        decode_image(b"", "request item 3")
    with pytest.raises(ImageError, match="not an image"):
        decode_image(b"hello", "request item 0")
    with pytest.raises(ImageError, match="truncated or corrupt"):
        decode_image(_jpeg_exif_rotated()[:-2], "request item 0")


def test_serving_modules_are_torch_free():
    """The Triton stub environment has no torch: what it and the clients import must not need it."""
    import subprocess
    import sys

    code = ("import sys\n"
            "for m in ('der_deploy.serve.models', 'der_deploy.serve.client', "
            "'der_deploy.serve.server', 'der_deploy.serve.load', 'der_deploy.cli.serve', "
            "'der_deploy.serve.repository'):\n"
            "    __import__(m)\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision')))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"
