"""The process's one OpenVINO ``Core``: every runner, capability query and budget check compiles on it.

Why one, not one per runner: each ``Core`` loads its own CPU plugin, and the plugin points the alternate signal
stack (``sigaltstack``) of the thread that loads it at a stack of its own, putting back the one it found when it
unloads. Two Cores that end in another order than they started therefore leave that thread's alternate stack on
memory already freed (openvino 2026.4.1; tests/backends/test_openvino_core.py shows it). The next signal handled
on it -- SIGCHLD under a torch DataLoader's handler when any subprocess exits, SIGTERM or SIGINT in a server --
kills the process with SIGSEGV, or, once the address is reused, writes the signal frame into live memory. A single
Core that lives as long as the process never unloads its plugin early, and compiling is thread-safe on it.
(Loading one plugin instead of one per runner also saves its start-up time and memory.)
"""
from __future__ import annotations

import threading

from der_deploy.errors import BackendUnavailable

INSTALL_HINT = "OpenVINO is not installed; pip install 'der-deploy[openvino]'"

_lock = threading.Lock()
_core = None


def import_openvino():
    """The openvino module, or BackendUnavailable with the install line (one line)."""
    try:
        import openvino
    except ImportError:  # also when sys.modules["openvino"] is None
        raise BackendUnavailable(INSTALL_HINT) from None
    return openvino


def shared_core():
    """The process-wide ``openvino.Core`` (made on first use). Settings go in each ``compile_model`` config,
    never ``set_property`` on it: it is shared."""
    global _core
    ov = import_openvino()  # every time: a cached Core must not hide an openvino that is gone (tests hide it)
    with _lock:
        if _core is None:
            _core = ov.Core()
        return _core
