"""der-train: train DER (paper §IV-B recipe) on a dataset; runs under torchrun for DDP."""
from __future__ import annotations

from pathlib import Path

import click

from ._common import decode_option, handle_errors, parse_size

FORMAT_CHOICES = ("voc", "coco", "nuswide", "csv")


def _size(ctx, param, value):
    return parse_size(value) if isinstance(value, str) else value


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("data", type=click.Path(path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path),
              help="Best checkpoint (by joint val mAP); the last epoch goes to <stem>.last.pt beside it.")
@click.option("--train-split", default="trainval", show_default=True)
@click.option("--val-split", default="test", show_default=True, help="Split evaluated after every epoch.")
@click.option("--format", "data_format", type=click.Choice(FORMAT_CHOICES), default=None,
              help="Dataset format (detected from DATA by default).")
# A plain string: the registry (train/backbones.py) needs torch, which --help should not import;
# TrainConfig.validate refuses an unknown name in one line.
@click.option("--arch", default="resnet101", show_default=True, metavar="NAME",
              help="Backbone: resnet18/34/50/101/152, vgg16, vgg16_bn, vgg19, vgg19_bn, convnext_tiny, "
                   "efficientnet_b0, efficientnet_v2_s, regnet_y_400mf, mobilenet_v3_small, mobilenet_v3_large.")
@click.option("--input-size", default="448", show_default=True, callback=_size,
              help="N or HxW; at least the backbone's stride (32; VGG 16), which X's h x w and f_embed's width follow.")
@click.option("--epochs", default=60, show_default=True, type=click.IntRange(1, None))
@click.option("--batch-size", default=16, show_default=True, type=click.IntRange(1, None),
              help="Per process (under torchrun the global batch is N times this).")
@click.option("--lr", default=0.01, show_default=True, type=click.FloatRange(0, None, min_open=True))
@click.option("--momentum", default=0.9, show_default=True, type=click.FloatRange(0, None))
@click.option("--weight-decay", default=1e-4, show_default=True, type=click.FloatRange(0, None))
@click.option("--lr-step", default=20, show_default=True, type=click.IntRange(1, None),
              help="Multiply the learning rate by --lr-gamma every this many epochs.")
@click.option("--lr-gamma", default=0.1, show_default=True, type=click.FloatRange(0, None, min_open=True))
@click.option("--alpha", default=0.5, show_default=True, type=click.FloatRange(0, None),
              help="Weight of the label-correlation embedding loss (Eq. 7, 16).")
@click.option("--beta", default=0.05, show_default=True, type=click.FloatRange(0, None),
              help="Weight of the label-ranking loss (Eq. 10, 16).")
@click.option("--embed-loss", default="der", show_default=True, type=click.Choice(["der", "triplet"]),
              help="triplet = Table VI's D + triplet loss: a triplet loss with semi-hard negative mining on the "
                   "label vectors, weighted by --alpha, replaces Eq. 7 + Eq. 10 (--beta unused).")
@click.option("--triplet-margin", default=1.0, show_default=True, type=click.FloatRange(0, None, min_open=True),
              help="Margin of --embed-loss triplet (on squared distances).")
@click.option("--head", default="der", show_default=True, type=click.Choice(["der", "baseline"]),
              help="baseline = GMP + FC only (Table IV, first row).")
@click.option("--workers", default=2, show_default=True, type=click.IntRange(0, None),
              help="Image-decoding worker processes per training process (0 = in process).")
@click.option("--pretrained", is_flag=True, help="ImageNet weights via torchvision (downloads once).")
@click.option("--backbone-weights", type=click.Path(path_type=Path), default=None,
              help="Local torchvision state dict of the --arch model for the backbone (offline --pretrained).")
@click.option("--resume", type=click.Path(path_type=Path), default=None,
              help="Continue from a checkpoint (e.g. model.last.pt) exactly where it stopped.")
@click.option("--clip-grad", "clip_grad", type=click.FloatRange(0, None), default=None, metavar="NORM",
              help="Clip the gradient's L2 norm to NORM; 0 = off. Default 50, or the resumed checkpoint's value.")
@click.option("--warmup-epochs", type=click.FloatRange(0, None), default=None, metavar="E",
              help="Raise the learning rate linearly per step over the first E epochs (fractions allowed). "
                   "Default 0, or the resumed checkpoint's value.")
@click.option("--max-bad-steps", default=10, show_default=True, type=click.IntRange(1, None),
              help="Steps with a non-finite loss or gradient are skipped; this many in a row stop the run.")
@click.option("--amp", type=click.Choice(["off", "bf16", "fp16"]), default=None,
              help="Mixed precision for the training forward pass: bf16 (CPU or a bfloat16 GPU) or fp16 (CUDA, "
                   "with loss scaling); losses, weights and validation stay float32. Default off, or the resumed "
                   "checkpoint's value.")
@decode_option("full", "A resumed run must use its checkpoint's mode.")
@click.option("--precise-bn", default=0, show_default=True, type=click.IntRange(0, None), metavar="N",
              help="After every epoch, re-estimate the BatchNorm statistics with that epoch's weights on the first N "
                   "training images (deployment preprocessing), before validating and saving; 0 = off. Short runs of "
                   "mobilenet_v3 (BN momentum 0.01) need it: their eval-mode outputs otherwise barely vary.")
@click.option("--seed", default=0, show_default=True, type=int)
@handle_errors
def main(data: Path, output: Path, train_split: str, val_split: str, data_format: str | None, arch: str,
         input_size: tuple[int, int], epochs: int, batch_size: int, lr: float, momentum: float, weight_decay: float,
         lr_step: int, lr_gamma: float, alpha: float, beta: float, embed_loss: str, triplet_margin: float, head: str, workers: int, pretrained: bool,
         backbone_weights: Path | None, resume: Path | None, clip_grad: float | None, warmup_epochs: float | None,
         max_bad_steps: int, amp: str | None, decode: str, precise_bn: int, seed: int) -> None:
    """Train DER on DATA (VOC/COCO/NUS-WIDE folder or CSV) and write the best checkpoint to -o."""
    from ..progress import out_console, table
    from ..train.engine import TrainConfig, train

    cfg = TrainConfig(data=data, output=output, train_split=train_split, val_split=val_split, arch=arch,
                      input_size=input_size, epochs=epochs, batch_size=batch_size, lr=lr, momentum=momentum,
                      weight_decay=weight_decay, lr_step=lr_step, lr_gamma=lr_gamma, alpha=alpha, beta=beta,
                      embed_loss=embed_loss, triplet_margin=triplet_margin, head=head, workers=workers, resume=resume, pretrained=pretrained,
                      backbone_weights=backbone_weights, seed=seed, data_format=data_format, clip_grad=clip_grad,
                      warmup_epochs=warmup_epochs, max_bad_steps=max_bad_steps, amp=amp, decode=decode,
                      precise_bn=precise_bn)
    result = train(cfg)
    import os

    if os.environ.get("RANK", "0") != "0":
        return
    best = max(result.history, key=lambda r: r["map"]["joint"])
    rows = [(stream, f"{100 * best['map'][stream]:.2f}", f"{100 * max(r['map'][stream] for r in result.history):.2f}",
             f"{100 * result.history[-1]['map'][stream]:.2f}") for stream in best["map"]]
    out_console.print(table(f"val mAP (%) on {val_split!r}, {head} head; best epoch {best['epoch']}",
                            ["stream", "best epoch", "max over epochs", "last epoch"], rows))
    out_console.print(f"best: {result.best_path}  (joint mAP {100 * result.best_map:.2f})")
    out_console.print(f"last: {result.last_path}  (joint mAP {100 * result.last_map:.2f})")


if __name__ == "__main__":
    main()
