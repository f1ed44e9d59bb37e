"""Shared CLI plumbing: one line per user error, no traceback; Ctrl-C exits 130."""
from __future__ import annotations

import functools
import sys
from typing import Callable, NoReturn, TypeVar

import click

from ..errors import DerError

F = TypeVar("F", bound=Callable)


def fail(message: str, code: int = 2) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def handle_errors(func: F) -> F:
    """Turn DerError into ``error: <message>`` on stderr and a non-zero exit."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except DerError as err:
            fail(str(err), err.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)

    return wrapper  # type: ignore[return-value]


def parse_size(text: str) -> tuple[int, int]:
    """'448' -> (448, 448); '384x512' -> (384, 512) as (H, W)."""
    try:
        parts = [int(p) for p in text.lower().replace(",", "x").split("x")]
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a size; use N or HxW, e.g. 448 or 384x512") from None
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or min(parts) <= 0:
        raise click.BadParameter(f"{text!r} is not a size; use N or HxW, e.g. 448 or 384x512")
    return parts[0], parts[1]


_DRAFT = ("draft shrinks JPEGs on load (DCT scaling to the smallest 1/2, 1/4, 1/8 that still covers the input size: "
          "faster and less memory for camera-size photos)")


def decode_option(default: str | None, note: str) -> Callable[[F], F]:
    """--decode for every command that writes a card (der-train, der-export); one text for what draft does."""
    from ..artifact.card import DECODE_MODES

    return click.option("--decode", type=click.Choice(DECODE_MODES), default=default, show_default=default is not None,
                        help=f"Image decoding written into the card, so that every runtime decodes the same way. "
                             f"{_DRAFT}. {note}")
