"""der-table: the paper-style ablation table (Tables IV-VI, Figs. 6-7) from der-train checkpoints."""
from __future__ import annotations

import json
from pathlib import Path

import click

from ._common import handle_errors


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("data", type=click.Path(path_type=Path))
@click.argument("checkpoints", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--split", default="test", show_default=True, help="Dataset split every checkpoint is evaluated on.")
@click.option("--format", "data_format", type=click.Choice(["voc", "coco", "nuswide", "csv"]), default=None,
              help="Dataset format (detected from DATA by default).")
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(1))
@click.option("--workers", default=0, show_default=True, type=click.IntRange(0),
              help="Image-decoding worker processes (0 = in process).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--json", "json_out", type=click.Path(path_type=Path),
              help="Also write rows and groups as JSON (mAP as fractions).")
@handle_errors
def main(data: Path, checkpoints: tuple[Path, ...], split: str, data_format: str | None, batch_size: int,
         workers: int, device: str, json_out: Path | None) -> None:
    """Evaluate CHECKPOINTS on DATA and print one row per checkpoint: its recipe (arch, head, embed loss, α, β,
    seed, from the checkpoint's config) and the mAP of the fcls / scls / joint streams (Table V); then the
    mean ± std over checkpoints whose configs differ only by the seed."""
    from der_deploy.fileio import write_text
    from der_deploy.progress import out_console, table
    from der_deploy.tools.paper_table import GROUP_COLUMNS, ROW_COLUMNS, group_cells, paper_table, row_cells, to_json

    rows, groups = paper_table(data, checkpoints, split=split, data_format=data_format, batch_size=batch_size,
                               workers=workers, device=device)
    title = f"mAP (%) on {data} {split!r}, {len(rows)} checkpoint{'s' if len(rows) != 1 else ''}"
    out_console.print(table(title, ROW_COLUMNS, [row_cells(r) for r in rows]))
    if any(len(g.members) > 1 for g in groups):
        out_console.print(table("mean ± std (sample, ddof 1) over seeds of one recipe", GROUP_COLUMNS,
                                [group_cells(g) for g in groups]))
    if json_out:
        write_text(json_out, json.dumps(to_json(rows, groups, data=data, split=split), indent=2) + "\n")


if __name__ == "__main__":
    main()
