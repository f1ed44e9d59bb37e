"""One base for every backend runner, after Polygraphy: activate / infer / deactivate with ``*_impl`` hooks."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Mapping

import numpy as np

from der_deploy.errors import EngineError


@dataclass(frozen=True)
class TensorMeta:
    name: str
    dtype: np.dtype
    shape: tuple  # ints, or None / str for dynamic dimensions


class BaseRunner:
    """Subclasses implement ``activate_impl``, ``infer_impl``, ``deactivate_impl`` and the metadata hooks.

    Loading is lazy: nothing heavy happens before :meth:`activate` (or entering the context manager).
    """

    def __init__(self, name: str):
        self.name = name
        self.is_active = False
        self.last_inference_time: float | None = None
        self._inputs: list[TensorMeta] = []  # filled by activate_impl
        self._outputs: list[TensorMeta] = []

    # --- lifecycle ----------------------------------------------------------------------------
    def activate(self) -> "BaseRunner":
        if self.is_active:
            raise EngineError(f"runner {self.name} is already active")
        self.activate_impl()
        self.is_active = True
        return self

    def deactivate(self) -> None:
        if not self.is_active:
            return
        try:
            self.deactivate_impl()
        finally:
            self.is_active = False

    close = deactivate

    def __enter__(self) -> "BaseRunner":
        return self.activate()

    def __exit__(self, *exc) -> None:
        self.deactivate()

    # --- inference ----------------------------------------------------------------------------
    def infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one batch. ``feed`` maps input names to arrays; returns output name -> host array."""
        if not self.is_active:
            raise EngineError(f"runner {self.name} is not active; call activate() or use it as a context manager")
        start = time.perf_counter()
        outputs = self.infer_impl(feed)
        self.last_inference_time = time.perf_counter() - start
        return outputs

    def get_input_metadata(self) -> list[TensorMeta]:
        return self.get_input_metadata_impl()

    def get_output_metadata(self) -> list[TensorMeta]:
        return self.get_output_metadata_impl()

    def summary(self) -> str:
        """One line saying what runs (backend, version, device, precision) for CLI summaries and reports."""
        return self.name

    @property
    def max_batch(self) -> int | None:
        """Largest batch the engine accepts (profile max), or None when unbounded."""
        return None

    @property
    def min_batch(self) -> int:
        """Smallest batch the engine accepts (1 unless the batch dimension is fixed); callers pad up to it."""
        return 1

    # --- hooks --------------------------------------------------------------------------------
    def activate_impl(self) -> None:
        raise NotImplementedError

    def infer_impl(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def deactivate_impl(self) -> None:
        raise NotImplementedError

    def _require_active(self) -> None:
        if not self.is_active:
            raise EngineError(f"runner {self.name} is not active; call activate() or use it as a context manager")

    def get_input_metadata_impl(self) -> list[TensorMeta]:
        self._require_active()
        return list(self._inputs)

    def get_output_metadata_impl(self) -> list[TensorMeta]:
        self._require_active()
        return list(self._outputs)
