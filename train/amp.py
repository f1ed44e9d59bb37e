"""Mixed-precision training (``der-train --amp``): autocast around the training forward pass, float32 losses,
and loss scaling for float16.

bf16 keeps float32's 8-bit exponent, so gradients do not underflow and no loss scaling is needed; it runs on CPU
(emulated, hence slower, on CPUs without AVX512-BF16/AMX) and on CUDA GPUs with bfloat16 units. fp16 has a 5-bit
exponent: small gradients flush to zero unless the loss is scaled (GradScaler), and it is offered on CUDA only
(torch's CPU float16 kernels are slow fallbacks). Asking for a mode the device cannot run is refused rather than
quietly trained in float32. Weights, optimizer state and checkpoints stay float32; validation and prediction run
without autocast, so the saved metrics are comparable across --amp settings.

StepGuard under fp16 (the choice made here): a finite loss with a non-finite gradient is GradScaler's normal
overflow signal -- the scale was too high, the scaler skips the update and halves the scale. That is not a bad
step: it neither counts towards --max-bad-steps nor resets the count, and the epoch record reports it as
``scaler_skipped``. A non-finite *loss* is a bad step as in float32 (lowering the scale cannot fix a forward
pass that overflowed), so StepGuard skips it and restores the BatchNorm statistics.
"""
from __future__ import annotations

import contextlib
from pathlib import Path

import torch

from der_deploy.errors import DerError

MODES = ("off", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve(requested: str | None, saved: dict | None) -> str:
    """--amp if given, else the resumed checkpoint's (``saved`` config; those from before --amp are float32)."""
    if requested is not None:
        return requested
    return str((saved or {}).get("amp") or "off")


def check(mode: str, device: torch.device | str, resumed: str | Path | None = None) -> None:
    """Refuse a mode this device cannot train in (one line naming the fix)."""
    device = torch.device(device)
    what = f"--amp {mode}" + (f" (stored in {resumed})" if resumed else "")
    if mode not in MODES:
        raise DerError(f"unknown --amp {mode!r}; use one of {', '.join(MODES)}")
    if mode == "off":
        return
    if device.type not in ("cpu", "cuda"):
        raise DerError(f"{what} is supported on cpu and cuda, not {device.type}; pass --amp off")
    if mode == "fp16" and device.type != "cuda":
        raise DerError(f"{what} needs a CUDA GPU and this run is on {device.type}; pass --amp bf16 (runs on CPU, "
                       f"needs no loss scaling) or --amp off")
    if mode == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported(including_emulation=False):
        name = torch.cuda.get_device_name(device)
        raise DerError(f"{what} needs a GPU with bfloat16 units (compute capability 8.0+), {name} has none; "
                       f"pass --amp fp16 or --amp off")


class Precision:
    """One run's precision policy: the autocast context, the float32 cast before the loss, and (fp16) the
    GradScaler. Every method is a plain float32 step when the mode is off."""

    def __init__(self, mode: str | None, device: torch.device | str):
        self.mode = mode or "off"
        self.device_type = torch.device(device).type
        self.dtype = _DTYPES.get(self.mode)
        self.scaler = torch.amp.GradScaler(self.device_type) if self.mode == "fp16" else None

    def autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    @staticmethod
    def float32(output):
        """The model output with every tensor in float32 (a no-op in float32 runs).

        Why the losses are not computed in bf16/fp16: L_lce (Eq. 7) and L_lr (Eq. 10) are squared distances
        between label vectors whose scale follows the CADMs (logit scale, ~100 within an epoch); bf16 keeps ~3
        significant digits, so the margin of 1 against distances of ~10^4 is rounding noise, and in fp16 such sums
        pass 65504 and overflow. The sigmoid cross-entropy's log-sum-exp loses its small terms the same way.
        """
        return type(output)(*(None if t is None else t.float() for t in output))

    def backward(self, loss: torch.Tensor) -> None:
        (loss if self.scaler is None else self.scaler.scale(loss)).backward()

    def unscale(self, optimizer) -> None:
        """Turn scaled gradients back into true ones, so clipping and the guard's norm see real values."""
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)

    def step(self, optimizer) -> bool:
        """Apply the update; False when the scaler skipped it (a gradient overflowed at the current scale)."""
        if self.scaler is None:
            optimizer.step()
            return True
        before = self.scaler.get_scale()
        self.scaler.step(optimizer)
        self.scaler.update()
        return self.scaler.get_scale() >= before  # update() lowers the scale exactly when it skipped the step

    def skipped(self) -> None:
        """After a bad step: close the scaler's iteration. Every rank unscaled the same all-reduced gradients,
        so every rank's scale stays the same (DDP averages scaled gradients: the scales must agree)."""
        if self.scaler is not None:
            self.scaler.update()

    def state_dict(self) -> dict | None:
        return None if self.scaler is None else self.scaler.state_dict()

    def load_state_dict(self, state: dict | None) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)
