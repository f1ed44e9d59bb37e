"""``der-table``: the paper's ablation tables (IV, V, VI; Figs. 6-7) from der-train checkpoints.

One row per checkpoint: its recipe, read from the checkpoint's stored config (arch, head, embed loss, α, β, seed),
and the mAP of each stream on one split -- ŷ_fcls (Eq. 12), ŷ_scls (Eq. 13) and the joint ŷ (Eq. 14), Table V's
three confidences -- computed by the training engine's own evaluation (``predict_scores`` + ``stream_maps``: the
core's preprocessing, the checkpoint's card). Checkpoints whose configs differ only by the seed (and by paths
and worker counts, which do not change the model) form a group: mean ± sample standard deviation (ddof 1).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from der_deploy.errors import DerError

STREAMS = ("fcls", "scls", "joint")
# Config keys that never change the trained model's recipe: they do not split a group.
NOT_RECIPE = ("seed", "output", "resume", "workers", "data")
# What a checkpoint without a config (written outside der-train) is shown with: der-train's defaults, seed unknown.
DEFAULTS = {"embed_loss": "der", "alpha": 0.5, "beta": 0.05, "seed": None}
# What a der-train checkpoint from before a config key existed trained with. Every later key's TrainConfig default
# keeps the earlier behaviour, except these, whose default is resolved at run time (stability.py: checkpoints from
# before clipping trained unclipped, without warm-up; amp.py: before --amp, float32).
ABSENT = {"clip_grad": 0.0, "warmup_epochs": 0.0, "amp": "off"}


@dataclass
class Row:
    name: str
    path: Path
    arch: str
    head: str
    embed_loss: str
    alpha: float | None
    beta: float | None
    seed: int | None
    maps: dict[str, float]  # stream -> mAP in [0, 1]; "scls" absent for the baseline head
    recipe: dict[str, Any] = field(default_factory=dict)  # the group key: config without NOT_RECIPE

    @property
    def method(self) -> str:
        """The paper's row name: Baseline, D (disentangle), + E (embed, α), + R (rank, β), D + triplet."""
        return method_name(self.head, self.embed_loss, self.alpha, self.beta)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "path": str(self.path), "method": self.method, "arch": self.arch,
                "head": self.head, "embed_loss": self.embed_loss, "alpha": self.alpha, "beta": self.beta,
                "seed": self.seed, "map": dict(self.maps), "recipe": self.recipe}


@dataclass
class Group:
    members: list[Row]
    mean: dict[str, float]
    std: dict[str, float]  # NaN with one member
    label: str = ""

    def to_dict(self) -> dict[str, Any]:
        nan = lambda v: None if math.isnan(v) else v  # noqa: E731 -- strict JSON has no NaN
        return {"label": self.label, "members": [r.name for r in self.members], "n": len(self.members),
                "seeds": [r.seed for r in self.members], "mean": {k: nan(v) for k, v in self.mean.items()},
                "std": {k: nan(v) for k, v in self.std.items()}, "recipe": self.members[0].recipe}


def method_name(head: str, embed_loss: str, alpha: float | None, beta: float | None) -> str:
    if head == "baseline":
        return "Baseline"
    if embed_loss == "triplet":
        return "D + triplet" if alpha else "D"
    parts = ["D"] + (["E"] if alpha else []) + (["R"] if beta else [])
    return " + ".join(parts)


def short_names(paths: Sequence[Path]) -> list[str]:
    """The shortest path tails that tell the checkpoints apart (``model`` or ``seed1/model``), without the suffix."""
    parts = [Path(p).with_suffix("").parts for p in paths]
    for k in range(1, max((len(p) for p in parts), default=1) + 1):
        names = ["/".join(p[-k:]) for p in parts]
        if len(set(names)) == len(names):
            return names
    return [str(p) for p in paths]  # the same file twice: keep it as given


def stored_config(data: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint's config with the keys it predates filled in, so that an older checkpoint and a newer one of
    the same recipe compare equal (otherwise a key added later, e.g. precise_bn, would split every group)."""
    import dataclasses

    from der_deploy.train.engine import TrainConfig

    config = dict(data.get("config") or {})
    if not config:
        return dict(DEFAULTS)
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig) if f.default is not dataclasses.MISSING}
    return {**defaults, **ABSENT, **config}


def recipe_of(data: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint's recipe: its stored config without NOT_RECIPE, plus what the checkpoint itself records."""
    recipe = {k: v for k, v in stored_config(data).items() if k not in NOT_RECIPE}
    recipe.update(arch=data["arch"], head=data["head"], input_size=[int(v) for v in data["input_size"]],
                  num_classes=int(data["num_classes"]))
    return dict(sorted(recipe.items()))


def evaluate_checkpoint(path: str | Path, dataset, *, name: str | None = None, batch_size: int = 32,
                        workers: int = 0, device: str = "cpu") -> Row:
    """Per-stream mAP of one checkpoint on ``dataset`` (an opened split), with the recipe from its config."""
    from der_deploy.train.checkpoint import load_checkpoint, read_checkpoint
    from der_deploy.train.engine import predict_scores, stream_maps

    path = Path(path)
    data = read_checkpoint(path)
    model, card = load_checkpoint(path, data=data)
    if list(dataset.classes) != list(card.classes):
        raise DerError(f"{path}: its classes ({', '.join(card.classes[:4])}...) differ from the data's "
                       f"({', '.join(dataset.classes[:4])}...); evaluate on the dataset it was trained for")
    logits, targets = predict_scores(model.to(device), dataset, card, batch_size, workers=workers)
    config = stored_config(data)
    return Row(name=name or path.stem, path=path, arch=data["arch"], head=data["head"],
               embed_loss=str(config["embed_loss"]), alpha=_num(config["alpha"]), beta=_num(config["beta"]),
               seed=None if config["seed"] is None else int(config["seed"]),
               maps=stream_maps(logits, targets), recipe=recipe_of(data))


def _num(value) -> float | None:
    return None if value is None else float(value)


def group_rows(rows: Sequence[Row]) -> list[Group]:
    """Rows with the same recipe (configs equal but for NOT_RECIPE), in order of first appearance."""
    groups: dict[str, list[Row]] = {}
    for row in rows:
        groups.setdefault(repr(row.recipe), []).append(row)
    out = []
    for members in groups.values():
        seeds = [r.seed for r in members if r.seed is not None]
        twice = sorted({s for s in seeds if seeds.count(s) > 1})
        if twice:  # e.g. model.pt and model.last.pt of one run: mean ± std would count that run twice
            same = [r.name for r in members if r.seed == twice[0]]
            raise DerError(f"{' and '.join(same)} have the same recipe and seed {twice[0]}; pass one checkpoint per "
                           "run (e.g. leave out the *.last.pt files)")
        mean, std = {}, {}
        for stream in STREAMS:
            values = np.array([r.maps[stream] for r in members if stream in r.maps], dtype=np.float64)
            if len(values):
                mean[stream] = float(values.mean())
                std[stream] = float(values.std(ddof=1)) if len(values) > 1 else float("nan")
        out.append(Group(members, mean, std))
    _label(out)
    return out


def _label(groups: list[Group]) -> None:
    """Method, arch and weights; groups that would still read alike also name the recipe keys they differ in."""
    for g in groups:
        r = g.members[0]
        weights = f"α {_opt(r.alpha)} margin {_opt(r.recipe.get('triplet_margin'))}" if r.embed_loss == "triplet" \
            else f"α {_opt(r.alpha)} β {_opt(r.beta)}"
        g.label = f"{r.method} {r.arch}" + ("" if r.head == "baseline" else f" {weights}")
    for label in {g.label for g in groups}:
        same = [g for g in groups if g.label == label]
        if len(same) > 1:
            keys = sorted({k for g in same for k in g.members[0].recipe
                           if len({repr(h.members[0].recipe.get(k)) for h in same}) > 1})
            for g in same:
                g.label += " (" + ", ".join(f"{k} {g.members[0].recipe.get(k)}" for k in keys) + ")"


def paper_table(data: str | Path, checkpoints: Sequence[str | Path], *, split: str = "test",
                data_format: str | None = None, batch_size: int = 32, workers: int = 0,
                device: str = "auto") -> tuple[list[Row], list[Group]]:
    """Evaluate every checkpoint on DATA's ``split`` and group them by recipe."""
    from der_deploy.datasets import open_dataset

    if not checkpoints:
        raise DerError("no checkpoints given; pass one or more der-train checkpoints (model.pt)")
    device = _device(device)
    dataset = open_dataset(data, split, format=data_format)
    if len(dataset) == 0:
        raise DerError(f"{data}: split {split!r} has no images; choose another --split")
    names = short_names([Path(c) for c in checkpoints])
    rows = [evaluate_checkpoint(c, dataset, name=n, batch_size=batch_size, workers=workers, device=device)
            for c, n in zip(checkpoints, names)]
    return rows, group_rows(rows)


def _device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise DerError("--device cuda: PyTorch sees no CUDA GPU here; use --device cpu")
    return device


def _pct(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{100 * value:.2f}"


def _opt(value) -> str:
    return "-" if value is None else f"{value:g}"


def row_cells(row: Row) -> list[str]:
    der = row.head == "der"  # the baseline trains L_cls only; the triplet loss has no β
    return [row.name, row.method, row.arch, row.head, row.embed_loss if der else "-", _opt(row.alpha if der else None),
            _opt(row.beta if der and row.embed_loss != "triplet" else None), "-" if row.seed is None else str(row.seed),
            *(_pct(row.maps.get(s)) for s in STREAMS)]


def group_cells(group: Group) -> list[str]:
    seeds = ",".join("?" if r.seed is None else str(r.seed) for r in group.members)

    def cell(stream: str) -> str:
        if stream not in group.mean:
            return "-"
        if math.isnan(group.std[stream]):
            return _pct(group.mean[stream])
        return f"{100 * group.mean[stream]:.2f} ± {100 * group.std[stream]:.2f}"

    return [group.label, str(len(group.members)), seeds, *(cell(s) for s in STREAMS)]


ROW_COLUMNS = ("checkpoint", "method", "arch", "head", "embed loss", "α", "β", "seed",
               "mAP fcls", "mAP scls", "mAP joint")
GROUP_COLUMNS = ("recipe", "n", "seeds", "fcls mean ± std", "scls mean ± std", "joint mean ± std")


def to_json(rows: Sequence[Row], groups: Sequence[Group], *, data, split: str) -> dict[str, Any]:
    """mAP as fractions in [0, 1] (as der-eval's JSON); std null for a group of one."""
    return {"data": str(data), "split": split, "rows": [r.to_dict() for r in rows],
            "groups": [g.to_dict() for g in groups]}
