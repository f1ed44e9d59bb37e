"""der-serve: run Triton Inference Server on a repository written by der-export --triton.

    der-serve REPO              serve it (same as `der-serve run REPO`) until Ctrl-C
    der-serve install           unpack tritonserver + its numpy<2 Python into the cache folder
    der-serve load REPO         measure it under a bounded loopback load, against der-infer on the same engine
"""
from __future__ import annotations

import signal
import sys
from pathlib import Path

import click

from ._common import handle_errors


class _RunByDefault(click.Group):
    """`der-serve REPO` keeps working: a first argument that is no subcommand means `run`."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


@click.group(cls=_RunByDefault, context_settings={"help_option_names": ["-h", "--help"]})
def main():
    """Serve a der-export --triton repository with tritonserver (`der-serve REPO`), install the server, or load-test it."""


@main.command("run")
@click.argument("repo", type=click.Path(file_okay=False, path_type=Path))
@click.option("--http-port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--grpc-port", default=8001, show_default=True, type=click.IntRange(1, 65535))
@click.option("--metrics-port", default=8002, show_default=True, type=click.IntRange(1, 65535))
@click.option("--address", default="127.0.0.1", show_default=True,
              help="Bind address for all three endpoints (0.0.0.0 exposes the server to the network).")
@click.option("--server", type=click.Path(dir_okay=False, path_type=Path), envvar="DER_TRITONSERVER",
              help="tritonserver binary [default: $DER_TRITONSERVER, PATH, then the [serve] extra's].")
@click.option("--python", "python", type=click.Path(dir_okay=False, path_type=Path), envvar="DER_TRITON_PYTHON",
              help="Python (with der-deploy) that runs the Python-backend models [default: this one].")
@click.option("--timeout", default=180.0, show_default=True, type=click.FloatRange(1, None),
              help="Seconds to wait for every model to be ready.")
@click.option("--log", "log_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Append the server's own log here.")
@click.option("-v", "--verbose", is_flag=True, help="Echo the server's log to stderr.")
@handle_errors
def run(repo, http_port, grpc_port, metrics_port, address, server, python, timeout, log_file, verbose):
    """Serve REPO (from der-export --triton) with tritonserver until Ctrl-C or SIGTERM."""
    ports = {"--http-port": http_port, "--grpc-port": grpc_port, "--metrics-port": metrics_port}
    if len(set(ports.values())) != 3:
        raise click.UsageError("--http-port, --grpc-port and --metrics-port must be three different ports")
    from der_deploy.serve.server import ServeError, TritonServer

    srv = TritonServer(repo, http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port, address=address,
                       server=server, python=python, log_file=log_file, echo=verbose)

    def on_signal(signum, frame):  # SIGTERM behaves like Ctrl-C: stop the child, then exit
        raise KeyboardInterrupt

    # SIGINT too: a shell starts background jobs with SIGINT ignored, and Python keeps an inherited SIG_IGN,
    # so without this "Ctrl-C to stop" (or kill -INT) would never reach a der-serve started with `&`.
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        srv.start()
        srv.wait_ready(timeout)
        entries = [m for m, kind in srv.models.items() if kind == "ensemble"]
        click.echo(f"der-serve: {len(srv.models)} models of {srv.repo} ready (tritonserver pid {srv.proc.pid})")
        click.echo(f"  HTTP     http://{address}:{http_port}   (KServe v2, e.g. POST /v2/models/"
                   f"{entries[0] if entries else next(iter(srv.models))}/infer)")
        click.echo(f"  gRPC     {address}:{grpc_port}")
        click.echo(f"  metrics  http://{address}:{metrics_port}/metrics")
        if entries:
            click.echo(f"  try      der-infer --triton {address}:{http_port} IMAGES...")
        click.echo("Ctrl-C to stop.")
        sys.stdout.flush()
        code = srv.proc.wait()  # returns only if the server dies on its own
        srv.stop()
        raise ServeError(f"tritonserver exited unexpectedly (code {code}): {srv.failure()}")
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the shutdown short
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        code = srv.stop()
        click.echo(f"der-serve: stopped (tritonserver exit code {code})", err=True)
    finally:
        srv.stop()


@main.command("install")
@click.option("--cache", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Cache folder [default: $DER_TRITON_CACHE, else ~/.cache/der-deploy/triton].")
@click.option("--print", "what", type=click.Choice(["server", "python"]), default=None,
              help="Print only this path (for scripts): the tritonserver binary or the models' Python.")
@handle_errors
def install_cmd(cache, what):
    """Unpack tritonserver (PyPI's nvidia-pytriton wheel, not pip-installed) and a numpy<2 Python with this
    der-deploy for the Python-backend models into the cache folder. Cheap when they are already there."""
    from der_deploy.serve.install import cache_dir, install

    folder = cache if cache is not None else cache_dir()
    inst = install(folder)
    if what == "server":
        click.echo(inst.server)
    elif what == "python":
        click.echo(inst.python)
    else:
        click.echo(f"tritonserver  {inst.server}")
        click.echo(f"python        {inst.python}   (numpy<2 + der-deploy; der-serve uses it by default)")


@main.command("load")
@click.argument("repo", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--images", type=click.Path(exists=True, path_type=Path), required=True, help="Folder of images to send.")
@click.option("-n", "--requests", default=400, show_default=True, type=click.IntRange(1, None),
              help="Single-image requests per concurrency level.")
@click.option("-c", "--concurrency", default="1,4,16", show_default=True, help="Comma-separated client counts.")
@click.option("--url", default=None, help="Measure an already running local server (HOST:PORT or grpc://HOST:PORT).")
@click.option("--python", "python", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Python for the Python-backend models (see der-serve run --python).")
@click.option("--name", default="der", show_default=True, help="Model name given to der-export --triton-name.")
@click.option("--batch-size", default=8, show_default=True, type=click.IntRange(1, None),
              help="der-infer batch for the engine-only reference.")
@click.option("--deadline", default=300.0, show_default=True, type=click.FloatRange(1, None),
              help="Seconds per concurrency level at most.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the results here (atomically).")
@handle_errors
def load(repo, images, requests, concurrency, url, python, name, batch_size, deadline, json_out):
    """Load-test REPO on loopback: img/s and p50/p99 per concurrency level, then der-infer on the same engine."""
    from der_deploy.serve.load import run_session

    try:
        levels = [int(c) for c in concurrency.split(",")]
    except ValueError:
        raise click.BadParameter(f"{concurrency!r}: give client counts like 1,4,16", param_hint="-c") from None
    if not levels or min(levels) < 1:
        raise click.BadParameter(f"{concurrency!r}: client counts must be >= 1", param_hint="-c")
    run_session(repo, images, levels=levels, requests=requests, url=url, python=python, name=name,
                batch_size=batch_size, deadline=deadline, json_out=json_out, echo=click.echo)


if __name__ == "__main__":  # pragma: no cover
    main()
