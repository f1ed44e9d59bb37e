"""der-serve: run Triton Inference Server on a repository written by der-export --triton."""
from __future__ import annotations

import signal
import sys
from pathlib import Path

import click

from ._common import handle_errors


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
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
def main(repo, http_port, grpc_port, metrics_port, address, server, python, timeout, log_file, verbose):
    """Serve REPO (from der-export --triton) with tritonserver until Ctrl-C or SIGTERM."""
    ports = {"--http-port": http_port, "--grpc-port": grpc_port, "--metrics-port": metrics_port}
    if len(set(ports.values())) != 3:
        raise click.UsageError("--http-port, --grpc-port and --metrics-port must be three different ports")
    from der_deploy.runtime.triton_server import ServeError, TritonServer

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


if __name__ == "__main__":  # pragma: no cover
    main()
