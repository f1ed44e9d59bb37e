"""One progress/table library everywhere: rich. Progress goes to stderr so stdout stays machine-readable."""
from __future__ import annotations

import os
import sys
from typing import Iterable, Iterator, Sequence, TypeVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

T = TypeVar("T")

# A file, pipe or CI log has no width: rich would assume 80 columns and cut table cells ("check (atol/…").
# Not a terminal -> no limit, so tables keep their natural width and lines are never wrapped.
UNBOUNDED = 100_000


def _width(stream) -> int | None:
    try:
        return None if stream.isatty() else UNBOUNDED
    except (AttributeError, ValueError):  # closed or replaced stream
        return UNBOUNDED


err_console = Console(stderr=True, highlight=False, width=_width(sys.stderr))
out_console = Console(highlight=False, soft_wrap=True, width=_width(sys.stdout))


def progress_enabled() -> bool:
    return os.environ.get("DER_NO_PROGRESS", "") == "" and sys.stderr.isatty()


def make_progress(transient: bool = True) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=transient,
        disable=not progress_enabled(),
    )


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate with a progress bar on stderr (hidden when stderr is not a terminal)."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with make_progress() as progress:
        task = progress.add_task(description, total=total, status="")
        for item in items:
            yield item
            progress.advance(task)


def table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[object]]) -> Table:
    t = Table(title=title, title_justify="left")
    for i, col in enumerate(columns):
        t.add_column(col, justify="left" if i == 0 else "right")
    for row in rows:
        t.add_row(*["" if v is None else str(v) for v in row])
    return t
