"""Run a real ``tritonserver`` on a model repository: find it, start it, wait until ready, stop it cleanly.

Used by der-serve, the tests and the load generator. Only the standard library is needed (health checks go
through urllib), so a server can be managed without tritonclient.

Where the server comes from (first hit wins): an explicit path / ``$DER_TRITONSERVER``; ``tritonserver`` on
PATH; the one bundled in PyPI's nvidia-pytriton (the ``[serve]`` extra, or the copy ``der-serve install``
unpacks into the cache folder of :mod:`der_deploy.serve.install`). For the pytriton layout the Python backend is assembled in a private
backend folder of symlinks into the wheel (the stub finds its bundled libraries by a relative path), with
the stub for the Python version that will run the models.
"""
from __future__ import annotations

import importlib.util
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from der_deploy.errors import DerError

from .install import cache_dir, cached_servers

# Triton's own words for a model it refused: a bad config (poll) or a failed load.
_LOAD_ERROR = re.compile(r"(?:failed to load|Poll failed for model directory) '([^']+)'[^:]*: (.*?)\"?$")


class ServeError(DerError):
    """tritonserver could not be found, started, or did not get its models ready."""


@dataclass(frozen=True)
class ServerInstall:
    binary: Path
    python_backend: Path | None  # pytriton layout: folder with libtriton_python.so + utils
    stubs: Path | None  # pytriton layout: python_backend_stubs/<X.Y>/triton_python_backend_stub

    @property
    def bundled(self) -> bool:
        return self.stubs is not None


def _install_at(binary: Path) -> ServerInstall:
    top = binary.resolve().parent.parent  # .../tritonserver
    stubs = top / "python_backend_stubs"
    py = top / "backends" / "python"
    if stubs.is_dir() and (py / "libtriton_python.so").is_file():
        return ServerInstall(binary, py, stubs)
    return ServerInstall(binary, None, None)


def find_server(explicit: str | Path | None = None) -> ServerInstall:
    """Locate tritonserver; ServeError with the ways to get one when there is none."""
    candidates: list[Path] = []
    explicit = explicit or os.environ.get("DER_TRITONSERVER")
    if explicit:
        p = Path(explicit)
        if not (p.is_file() and os.access(p, os.X_OK)):
            raise ServeError(f"{p}: not an executable tritonserver; check --server / DER_TRITONSERVER")
        return _install_at(p)
    on_path = shutil.which("tritonserver")
    if on_path:
        candidates.append(Path(on_path))
    spec = importlib.util.find_spec("pytriton")  # the [serve] extra; located, never imported (heavy)
    if spec is not None and spec.submodule_search_locations:
        candidates.append(Path(list(spec.submodule_search_locations)[0]) / "tritonserver" / "bin" / "tritonserver")
    candidates += reversed(cached_servers())  # der-serve install's copy, newest version first
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return _install_at(c)
    raise ServeError("tritonserver not found: run `der-serve install` (unpacks one into "
                     f"{cache_dir()}), put it on PATH, or pass --server PATH")


def python_info(python: str | Path) -> tuple[str, int]:
    """('3.11', numpy major) of a Python interpreter; ServeError when it cannot run or lacks numpy."""
    code = "import sys, numpy; print('%d.%d' % sys.version_info[:2], numpy.__version__.split('.')[0])"
    try:
        out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise ServeError(f"{python}: cannot run this Python ({err}); check --python") from None
    if out.returncode != 0:
        raise ServeError(f"{python}: has no numpy (the Python-backend models need numpy + der-deploy); "
                         "pass --python of an environment with der-deploy installed")
    version, major = out.stdout.split()
    return version, int(major)


def port_free(address: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((address, port))
        except OSError:
            return False
    return True


def free_ports(n: int, address: str = "127.0.0.1") -> list[int]:
    """``n`` distinct ports the OS reports free right now (tests and benchmarks)."""
    socks, ports = [], []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((address, 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


def repository_models(repo: Path) -> dict[str, str]:
    """Model name -> backend/platform for every model folder with a config.pbtxt."""
    models = {}
    for cfg in sorted(repo.glob("*/config.pbtxt")):
        text = cfg.read_text(encoding="utf-8", errors="replace")
        m = re.search(r'^\s*(?:backend|platform)\s*:\s*"([^"]+)"', text, re.M)
        models[cfg.parent.name] = m.group(1) if m else "?"
    return models


class TritonServer:
    """``with TritonServer(repo, http_port=..., ...) as s: s.wait_ready()`` -- a child tritonserver.

    The child gets its own process group so that stopping it also stops the Python-backend stubs it
    spawned (no orphans), and the models run with ``python``'s environment first on PATH.
    """

    def __init__(self, repo: str | Path, *, http_port: int = 8000, grpc_port: int = 8001, metrics_port: int = 8002,
                 address: str = "127.0.0.1", server: str | Path | None = None, python: str | Path | None = None,
                 log_file: str | Path | None = None, echo: bool = False, extra_args: list[str] | None = None):
        self.repo = Path(repo).resolve()
        if not self.repo.is_dir():
            raise ServeError(f"{repo}: no such model repository folder; write one with der-export --triton {repo}")
        self.models = repository_models(self.repo)
        if not self.models:
            raise ServeError(f"{repo}: no model folders with a config.pbtxt; write one with der-export --triton {repo}")
        self.ports = {"--http-port": http_port, "--grpc-port": grpc_port, "--metrics-port": metrics_port}
        self.address = address
        self.install = find_server(server)
        explicit = python or os.environ.get("DER_TRITON_PYTHON")
        self.python = Path(explicit or sys.executable)
        self._python_explicit = bool(explicit)
        self.log_file = Path(log_file) if log_file else None
        self.echo = echo
        self.extra_args = list(extra_args or [])
        self.proc: subprocess.Popen | None = None
        self.lines: deque[str] = deque(maxlen=400)
        self._tmp: tempfile.TemporaryDirectory | None = None
        self._reader: threading.Thread | None = None

    # --- start ----------------------------------------------------------------------------------
    def _backend_dir(self) -> Path | None:
        inst = self.install
        if not inst.bundled:
            return None
        version, numpy_major = python_info(self.python)
        # der-serve install leaves a numpy<2 environment beside the unzipped wheel: use it by default.
        up = inst.binary.resolve().parents
        stub_env = up[4] / "stub-env" / "bin" / "python" if len(up) > 4 else None
        if numpy_major >= 2 and not self._python_explicit and stub_env is not None and stub_env.is_file():
            self.python = stub_env
            version, numpy_major = python_info(self.python)
        if numpy_major >= 2:
            raise ServeError(f"{self.python} has numpy {numpy_major}.x, but the Python backend bundled with "
                             "nvidia-pytriton's tritonserver was built for numpy 1.x and corrupts numpy 2 tensors; "
                             "pass --python of an environment with numpy<2 and der-deploy "
                             "(`der-serve install` makes one and prints its path)")
        stub = inst.stubs / version / "triton_python_backend_stub"
        if not stub.is_file():
            have = ", ".join(sorted(p.name for p in inst.stubs.iterdir()))
            raise ServeError(f"{inst.binary}: no Python-backend stub for Python {version} (it has {have}); "
                             "pass --python of a supported Python version")
        self._tmp = tempfile.TemporaryDirectory(prefix="der-serve-")
        py = Path(self._tmp.name) / "backends" / "python"
        py.mkdir(parents=True)
        for src in (inst.python_backend / "libtriton_python.so", inst.python_backend / "triton_python_backend_utils.py",
                    stub):
            (py / src.name).symlink_to(src.resolve())  # a symlink: the stub finds its libraries relative to itself
        return py.parent

    def command(self) -> list[str]:
        cmd = [str(self.install.binary), f"--model-repository={self.repo}", "--allow-metrics=true",
               "--exit-on-error=true", "--exit-timeout-secs=10", "--log-verbose=0"]
        for flag in ("--http-address", "--grpc-address", "--metrics-address"):
            cmd.append(f"{flag}={self.address}")
        cmd += [f"{flag}={port}" for flag, port in self.ports.items()]
        return cmd + self.extra_args

    def start(self) -> "TritonServer":
        for flag, port in self.ports.items():
            if not port_free(self.address, port):
                raise ServeError(f"port {port} on {self.address} is already in use ({flag}); stop what holds it "
                                 f"or choose another port with {flag}")
        backends = self._backend_dir()
        cmd = self.command() + ([f"--backend-directory={backends}"] if backends else [])
        env = dict(os.environ)
        env["PATH"] = str(self.python.parent) + os.pathsep + env.get("PATH", "")  # the stub runs this Python
        try:
            self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=env, start_new_session=True, text=True, errors="replace", bufsize=1)
        except OSError as err:
            self.cleanup()
            raise ServeError(f"{self.install.binary}: cannot start ({err.strerror or err})") from None
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        return self

    def _read(self) -> None:
        log = open(self.log_file, "a", encoding="utf-8") if self.log_file else None
        try:
            for line in self.proc.stdout:
                self.lines.append(line.rstrip("\n"))
                if log:
                    log.write(line)
                    log.flush()
                if self.echo:
                    sys.stderr.write(line)
        finally:
            if log:
                log.close()

    # --- readiness ------------------------------------------------------------------------------
    def url(self, path: str = "") -> str:
        return f"http://{self.address}:{self.ports['--http-port']}{path}"

    def _ok(self, path: str) -> bool:
        try:
            with urllib.request.urlopen(self.url(path), timeout=2) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Block until every model of the repository is ready; ServeError quoting Triton on failure."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._reader.join(timeout=5)
                raise ServeError(self.failure())
            if self._ok("/v2/health/ready") and all(self._ok(f"/v2/models/{m}/ready") for m in self.models):
                return
            time.sleep(0.25)
        self.stop()
        raise ServeError(f"models of {self.repo} not ready after {timeout:.0f} s ({self.failure(short=True)}); "
                         "see the server log (der-serve --verbose)")

    def failure(self, short: bool = False) -> str:
        """One line from Triton's own output saying why it stopped or what failed to load."""
        lines = list(self.lines)
        for line in lines:
            m = _LOAD_ERROR.search(line)
            if m:
                reason = m.group(2).split("\\n")[0].strip()  # Triton escapes a Python traceback as literal \n
                hint = ""
                if "der_deploy" in reason and ("ImportError" in reason or "ModuleNotFoundError" in reason):
                    hint = f"; the Python that runs the models ({self.python}) needs der-deploy: pass --python"
                return f"Triton failed to load model '{m.group(1)}': {reason}{hint}"
        for key in ("Address already in use", "error:", "failed to", "Error"):
            hits = [ln for ln in lines if key in ln]
            if hits:
                text = re.sub(r"^[EWI]\d{4} [\d:.]+ +\d+ [\w.]+:\d+\] ", "", hits[-1]).strip().strip('"')
                return f"tritonserver: {text}"
        code = self.proc.returncode if self.proc else None
        return "still loading" if short else f"tritonserver exited with code {code} before its models were ready"

    # --- stop -----------------------------------------------------------------------------------
    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM (Triton unloads models and exits), then SIGKILL the whole group if it hangs."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        if proc is not None:
            try:  # stubs left behind by a hung or crashed server share its process group
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            proc.wait()
            if self._reader is not None:
                self._reader.join(timeout=5)
        self.cleanup()
        return proc.returncode if proc is not None else None

    def cleanup(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> "TritonServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
