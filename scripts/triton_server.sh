#!/usr/bin/env bash
# Fetch a real tritonserver once and print the path of its binary.
#
# The server comes from PyPI's nvidia-pytriton wheel, which bundles tritonserver, its shared libraries and
# the Python backend. The wheel is only downloaded and unzipped (never pip-installed: it pins numpy<2).
#
# That Python backend stub was built for numpy 1.x: with numpy 2 in the model's Python it silently corrupts
# tensors (measured: an input [1, 2] arrived as [1, 1]). So the Python-backend models run in a small venv
# of their own, CACHE/stub-env (numpy<2 + this der-deploy, editable), made here from $PYTHON.
#
# Usage: scripts/triton_server.sh [--python] [CACHE_DIR]   (default: build/triton, or $DER_TRITON_CACHE)
#   prints the tritonserver path; with --python, the stub env's python (pass it to der-serve --python).
set -euo pipefail

WANT=server
if [[ "${1:-}" == "--python" ]]; then WANT=python; shift; fi

VERSION="${DER_PYTRITON_VERSION:-0.7.0}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${1:-${DER_TRITON_CACHE:-$ROOT/build/triton}}"
DEST="$CACHE/pytriton-$VERSION"
BIN="$DEST/pytriton/tritonserver/bin/tritonserver"
PY="${PYTHON:-python3}"

if [[ ! -x "$BIN" ]]; then
    mkdir -p "$CACHE"
    WHEELS="$CACHE/wheels"
    "$PY" -m pip download -q --no-deps "nvidia-pytriton==$VERSION" -d "$WHEELS" >&2
    WHEEL="$(ls "$WHEELS"/nvidia_pytriton-"$VERSION"-*.whl | head -n 1)"
    TMP="$(mktemp -d "$CACHE/.extract.XXXXXX")"
    trap 'rm -rf "$TMP"' EXIT
    # A wheel is a zip; Python's zipfile keeps no exec bits, so unzip with the stdlib and chmod below.
    "$PY" - "$WHEEL" "$TMP" <<'EOF'
import sys, zipfile
zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])
EOF
    chmod +x "$TMP/pytriton/tritonserver/bin/tritonserver" "$TMP"/pytriton/tritonserver/python_backend_stubs/*/triton_python_backend_stub
    chmod 755 "$TMP"  # mktemp -d makes it private
    rm -rf "$DEST"
    mv "$TMP" "$DEST"  # atomic publish: a half-extracted tree is never seen as ready
    trap - EXIT
fi

ENV="$CACHE/stub-env"
STAMP="$ENV/.der-stamp"
WANT_STAMP="$("$PY" -c 'import sys; print(sys.version_info[:2])') $(sha256sum "$ROOT/pyproject.toml" | cut -c1-16)"
if [[ ! -f "$STAMP" || "$(cat "$STAMP")" != "$WANT_STAMP" ]]; then
    rm -rf "$ENV"
    "$PY" -m venv "$ENV"
    "$ENV/bin/pip" install -q --disable-pip-version-check "numpy<2" -e "$ROOT" >&2
    echo "$WANT_STAMP" > "$STAMP"
fi
if [[ "$WANT" == python ]]; then echo "$ENV/bin/python"; else echo "$BIN"; fi
