"""der-table (tools/paper_table.py): per-stream mAP of a checkpoint against scikit-learn on the model's own
outputs, grouping by recipe and mean ± std against numpy, the CLI's table and JSON, one-line errors."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from sklearn_ref import sklearn_map

from der_deploy.artifact.card import ModelCard
from der_deploy.cli.table import main as cli
from der_deploy.errors import DerError
from der_deploy.tools.paper_table import group_rows, method_name, paper_table, row_cells, short_names
from der_deploy.train.checkpoint import save_checkpoint
from der_deploy.train.engine import TrainConfig
from der_deploy.train.model import DER


@pytest.mark.slow
def test_one_checkpoint_matches_sklearn_on_its_own_outputs(trained_ckpt, synth_voc, tiny_recipe):
    from der_deploy.datasets import open_dataset
    from der_deploy.images import load_and_preprocess, stack
    from der_deploy.train.checkpoint import load_checkpoint

    model, card = load_checkpoint(trained_ckpt)
    ds = open_dataset(synth_voc, "test")
    x = torch.from_numpy(stack([load_and_preprocess(p, card) for p in ds.paths]))
    with torch.inference_mode():
        out = model(x)
    targets = ds.targets()
    want = {"fcls": sklearn_map(out.fcls.numpy(), targets), "scls": sklearn_map(out.scls.numpy(), targets),
            "joint": sklearn_map(torch.sigmoid(out.logits).numpy(), targets)}
    assert len({round(v, 6) for v in want.values()}) == 3  # three different streams, so a mix-up would show

    rows, groups = paper_table(synth_voc, [trained_ckpt], split="test", batch_size=13)
    (row,) = rows
    assert row.maps == pytest.approx(want, abs=1e-6)
    assert (row.arch, row.head, row.embed_loss, row.alpha, row.beta, row.seed) == (
        tiny_recipe["arch"], "der", "der", 0.5, 0.05, 0)
    assert row.method == "D + E + R"
    assert len(groups) == 1 and math.isnan(groups[0].std["joint"]) and groups[0].mean == row.maps


# -- handmade checkpoints: random weights, real configs (the table reads only the config and the outputs) --

SIZE = (32, 32)


@pytest.fixture(scope="module")
def voc(tmp_path_factory):
    from der_deploy.synth import generate

    return generate(tmp_path_factory.mktemp("table") / "voc", classes=3, images=40, seed=2, size=48)


def _ckpt(folder, voc, name, *, seed=0, head="der", drop=(), **config):
    from der_deploy.datasets import open_dataset

    classes = list(open_dataset(voc, "test").classes)
    torch.manual_seed(seed)
    model = DER(len(classes), "resnet18", input_size=SIZE, head=head)
    resolved = {"clip_grad": 50.0, "warmup_epochs": 0.0, "amp": "off", **config}  # as der-train stores them
    cfg = TrainConfig(data=voc, output=folder / name, arch="resnet18", input_size=SIZE, head=head, seed=seed,
                      **resolved)
    path = folder / name / "model.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    stored = {k: v for k, v in cfg.to_dict().items() if k not in drop}  # drop: keys an older der-train lacked
    return save_checkpoint(path, model, ModelCard(classes=classes, arch="resnet18", input_size=SIZE), config=stored)


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory, voc):
    d = tmp_path_factory.mktemp("ckpts")
    return {
        **{f"der{s}": _ckpt(d, voc, f"der{s}", seed=s, workers=s) for s in (0, 1, 2)},  # workers: not a recipe key
        "der_e2": _ckpt(d, voc, "der_e2", seed=0, epochs=2),  # another recipe: its own group
        "d_only": _ckpt(d, voc, "d_only", seed=0, alpha=0.0, beta=0.0),
        "base0": _ckpt(d, voc, "base0", seed=0, head="baseline"),
        "base1": _ckpt(d, voc, "base1", seed=1, head="baseline"),
        "tri": _ckpt(d, voc, "tri", seed=3, embed_loss="triplet", triplet_margin=0.5),
        # written before --precise-bn / --embed-loss / --amp existed, with clipping (the then default): same recipe
        "der_old": _ckpt(d, voc, "der_old", seed=5, drop=("precise_bn", "embed_loss", "triplet_margin", "amp")),
        # before --clip-grad existed: trained unclipped, so another recipe than der0..2 (clip-grad 50)
        "der_unclipped": _ckpt(d, voc, "der_unclipped", seed=0, drop=("clip_grad", "warmup_epochs")),
    }


def test_groups_and_mean_std_match_numpy(voc, ckpts):
    order = ["der0", "base0", "der1", "der_e2", "der2", "d_only", "base1", "tri", "der_old", "der_unclipped"]
    rows, groups = paper_table(voc, [ckpts[k] for k in order], device="cpu")
    assert [r.name for r in rows] == [f"{k}/model" for k in order]  # the shortest path tails that differ
    by = {r.name.split("/")[0]: r for r in rows}
    assert [r.method for r in rows] == ["D + E + R", "Baseline", "D + E + R", "D + E + R", "D + E + R", "D",
                                        "Baseline", "D + triplet", "D + E + R", "D + E + R"]
    assert [r.seed for r in rows] == [0, 0, 1, 0, 2, 0, 1, 3, 5, 0]
    assert "scls" not in by["base0"].maps and by["base0"].maps["joint"] == by["base0"].maps["fcls"]
    # shown: α/β only where they weigh a trained term (no β for the triplet loss, neither for the baseline)
    assert row_cells(by["tri"])[4:8] == ["triplet", "0.5", "-", "3"]
    assert row_cells(by["base0"])[4:8] == ["-", "-", "-", "0"] and row_cells(by["base0"])[9] == "-"
    assert [[m.name.split("/")[0] for m in g.members] for g in groups] == [
        ["der0", "der1", "der2", "der_old"], ["base0", "base1"], ["der_e2"], ["d_only"], ["tri"], ["der_unclipped"]]
    for g in groups:
        for stream in ("fcls", "scls", "joint"):
            values = [m.maps[stream] for m in g.members if stream in m.maps]
            if not values:
                assert stream not in g.mean
                continue
            assert g.mean[stream] == pytest.approx(np.mean(values), abs=1e-12)
            if len(values) > 1:
                assert g.std[stream] == pytest.approx(np.std(values, ddof=1), abs=1e-12)
                assert g.std[stream] > 0  # random seeds give different models
            else:
                assert math.isnan(g.std[stream])
    # two "D + E + R resnet18 α 0.5 β 0.05" groups: the label names the key they differ in
    assert groups[0].label.endswith("(clip_grad 50.0, epochs 60)") and groups[2].label.endswith("(clip_grad 50.0, epochs 2)")
    assert groups[5].label.endswith("(clip_grad 0.0, epochs 60)")
    assert groups[4].label == "D + triplet resnet18 α 0.5 margin 0.5"


def test_regrouping_the_same_rows_is_stable(voc, ckpts):
    rows, _ = paper_table(voc, [ckpts["der2"], ckpts["der0"]], device="cpu")
    (g,) = group_rows(rows)
    assert [m.seed for m in g.members] == [2, 0]


def test_cli_table_and_json(voc, ckpts, tmp_path):
    out = tmp_path / "t.json"
    args = [str(voc), *(str(ckpts[k]) for k in ("der0", "der1", "base0")), "--json", str(out), "--device", "cpu"]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    assert "mAP fcls" in res.output and "±" in res.output and "D + E + R" in res.output
    data = json.loads(out.read_text())
    assert [r["name"] for r in data["rows"]] == ["der0/model", "der1/model", "base0/model"]
    assert data["split"] == "test" and data["rows"][0]["alpha"] == 0.5 and data["rows"][2]["head"] == "baseline"
    assert [g["n"] for g in data["groups"]] == [2, 1]
    joint = [r["map"]["joint"] for r in data["rows"][:2]]
    assert data["groups"][0]["mean"]["joint"] == pytest.approx(np.mean(joint))
    assert data["groups"][0]["std"]["joint"] == pytest.approx(np.std(joint, ddof=1))
    assert data["groups"][1]["std"]["joint"] is None  # strict JSON: no NaN
    assert f"{100 * joint[0]:.2f}" in res.output


def test_errors_are_one_line(voc, ckpts, tmp_path):
    runner = CliRunner()
    res = runner.invoke(cli, [str(voc), str(tmp_path / "missing.pt")])
    assert res.exit_code == 2 and res.output.count("\n") == 1 and "missing.pt" in res.output
    from der_deploy.synth import generate

    other = generate(tmp_path / "other", classes=4, images=12, seed=0, size=48)
    res = runner.invoke(cli, [str(other), str(ckpts["der0"])])
    assert res.exit_code == 2 and "classes" in res.output and res.output.count("\n") == 1
    res = runner.invoke(cli, [str(voc)])
    assert res.exit_code != 0 and "CHECKPOINTS" in res.output
    with pytest.raises(DerError, match="no checkpoints"):
        paper_table(voc, [])
    # best and last checkpoint of one run: one seed counted twice would shrink the std
    twin = ckpts["der1"].with_name("model.last.pt")
    twin.write_bytes(ckpts["der1"].read_bytes())
    res = runner.invoke(cli, [str(voc), str(ckpts["der0"]), str(ckpts["der1"]), str(twin)])
    assert res.exit_code == 2 and res.output.count("\n") == 1
    assert "der1/model and der1/model.last have the same recipe and seed 1" in res.output


@pytest.mark.parametrize("head, loss, a, b, want", [
    ("baseline", "der", 0.5, 0.05, "Baseline"), ("der", "der", 0.0, 0.0, "D"), ("der", "der", 0.5, 0.0, "D + E"),
    ("der", "der", 0.5, 0.05, "D + E + R"), ("der", "triplet", 0.5, 0.05, "D + triplet")])
def test_method_names_follow_table_iv_and_vi(head, loss, a, b, want):
    assert method_name(head, loss, a, b) == want


def test_short_names():
    from pathlib import Path

    assert short_names([Path("a/s0/model.pt"), Path("b/s1/model.pt")]) == ["s0/model", "s1/model"]
    assert short_names([Path("runs/der.pt"), Path("runs/base.pt")]) == ["der", "base"]
    assert short_names([Path("x/s0/model.pt"), Path("y/s0/model.pt")]) == ["x/s0/model", "y/s0/model"]


def test_console_script_is_installed():
    import subprocess
    import sys
    from pathlib import Path

    exe = Path(sys.executable).with_name("der-table")
    if not exe.exists():
        pytest.skip("der-table not installed here; pip install -e . adds it (pyproject [project.scripts])")
    out = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "CHECKPOINTS" in out.stdout and "--json" in out.stdout
