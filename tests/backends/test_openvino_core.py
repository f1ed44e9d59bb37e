"""One OpenVINO Core per process (backends/openvino/core.py), and the crash it prevents.

Each Core's CPU plugin points the loading thread's alternate signal stack at a stack of its own and puts the old
one back when it unloads; two Cores ending first-in-first-out leave the thread on a freed stack, and the next
signal handled there kills the process with SIGSEGV. That is how `make test` died at random late in the run
(torch's DataLoader leaves a SIGCHLD handler, so the exit of any later subprocess was such a signal). Each scenario
runs in a child process, which receives a signal handled by Python (CPython installs handlers with SA_ONSTACK).
"""
from __future__ import annotations

import resource
import signal
import subprocess
import sys

import pytest

pytest.importorskip("openvino")

SCRIPT = r"""
import ctypes, gc, os, signal, sys

class stack_t(ctypes.Structure):
    _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]

libc = ctypes.CDLL(None, use_errno=True)
libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]

def altstack_state():
    s = stack_t()
    assert libc.sigaltstack(None, ctypes.byref(s)) == 0
    if s.ss_flags & 2:  # SS_DISABLE: signals run on the normal stack
        return "none"
    pages = (s.ss_sp + s.ss_size + 4095) // 4096 - s.ss_sp // 4096
    vec = ctypes.create_string_buffer(pages)
    return "mapped" if libc.mincore(s.ss_sp & ~4095, pages * 4096, vec) == 0 else "dangling"  # ENOMEM: unmapped

mode, onnx = sys.argv[1], sys.argv[2]
made = []
if mode == "runners":  # what der_deploy does: two runners, closed first-in-first-out, plus a capability query
    import openvino as ov

    class CountingCore(ov.Core):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    ov.Core = CountingCore
    from der_deploy.backends.openvino.cpu import openvino_capabilities
    from der_deploy.backends.openvino.runner import OpenVinoRunner

    first, second = OpenVinoRunner(onnx), OpenVinoRunner(onnx)
    first.activate()
    second.activate()
    first.deactivate()
    second.deactivate()
    openvino_capabilities()
else:  # "cores": one Core per user, as the runners had it before
    import openvino as ov

    first = ov.Core()
    a = first.compile_model(onnx, "CPU")
    second = ov.Core()
    b = second.compile_model(onnx, "CPU")
    del a, first
    gc.collect()
    del b, second
    gc.collect()
print(altstack_state(), f"cores={len(made)}", flush=True)
signal.signal(signal.SIGUSR1, lambda *_: None)
os.kill(os.getpid(), signal.SIGUSR1)
print("survived", flush=True)
"""


def _run(mode: str, onnx) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", SCRIPT, mode, str(onnx)], capture_output=True, text=True,
                          timeout=300, preexec_fn=_no_core_file)


def _no_core_file() -> None:  # the control child is meant to die of SIGSEGV: no core file in the working folder
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def test_runners_share_one_core_and_leave_a_live_signal_stack(tiny_onnx):
    """Two runners and a capability query make one Core between them; the signal stack is alive afterwards."""
    proc = _run("runners", tiny_onnx)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["mapped", "cores=1", "survived"]


def test_the_probe_sees_what_separate_cores_do(tiny_onnx):
    """The control: with one Core each, this OpenVINO leaves the freed stack behind and the signal kills the
    process, so the probe above can fail. (An OpenVINO that restores stacks in any order passes here too.)"""
    proc = _run("cores", tiny_onnx)
    state = proc.stdout.split()[:1]
    if state == ["dangling"]:
        assert proc.returncode == -signal.SIGSEGV and "survived" not in proc.stdout
    else:
        assert proc.returncode == 0 and proc.stdout.split() == [*state, "cores=0", "survived"], proc.stderr[-2000:]
