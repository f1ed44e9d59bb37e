"""Batch-size ranges ("optimization profiles") for dynamic-batch exports and TensorRT engines. Torch-free."""
from __future__ import annotations

from dataclasses import dataclass

from der_deploy.errors import DerError


@dataclass(frozen=True)
class BatchProfile:
    """1 <= min <= opt <= max. TensorRT tunes kernels for ``opt`` and accepts any batch in [min, max]."""

    min: int
    opt: int
    max: int

    def __post_init__(self) -> None:
        for name in ("min", "opt", "max"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int):
                raise DerError(f"batch {name} must be an integer, got {v!r}")
        if not 1 <= self.min <= self.opt <= self.max:
            raise DerError(
                f"batch profile {self.min}:{self.opt}:{self.max} is invalid; need 1 <= MIN <= OPT <= MAX, e.g. 1:8:32"
            )

    def __str__(self) -> str:
        return f"{self.min}:{self.opt}:{self.max}"

    def as_tuple(self) -> tuple[int, int, int]:
        return self.min, self.opt, self.max


def parse_profile(text: str | int | tuple | BatchProfile) -> BatchProfile:
    """"MAX" -> 1:MAX:MAX, "MIN:MAX" -> MIN:MAX:MAX, "MIN:OPT:MAX" as given.

    OPT defaults to MAX: the largest batch is where throughput matters, and der-infer fills batches to
    its batch size. Raises :class:`DerError` (a ValueError too, for click callbacks) with the fix.
    """
    if isinstance(text, BatchProfile):
        return text
    if isinstance(text, int) and not isinstance(text, bool):
        parts: list = [text]
    elif isinstance(text, (tuple, list)):
        parts = list(text)
    else:
        raw = str(text).strip()
        try:
            parts = [int(p) for p in raw.split(":")]
        except ValueError:
            raise ProfileError(f"batch {raw!r} is not MAX, MIN:MAX or MIN:OPT:MAX (whole numbers), e.g. 1:32 or 1:8:32") from None
    if len(parts) == 1:
        parts = [1, parts[0], parts[0]]
    elif len(parts) == 2:
        parts = [parts[0], parts[1], parts[1]]
    elif len(parts) != 3:
        raise ProfileError(f"batch {text!r} has {len(parts)} fields; use MAX, MIN:MAX or MIN:OPT:MAX, e.g. 1:8:32")
    try:
        return BatchProfile(*parts)
    except DerError as err:
        raise ProfileError(str(err)) from None


class ProfileError(DerError, ValueError):
    """A malformed --batch value; a ValueError so click turns it into a usage error."""
