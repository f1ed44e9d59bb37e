#!/usr/bin/env bash
# Fetch a real tritonserver once and print the path of its binary.
#
# The server comes from PyPI's nvidia-pytriton wheel, which bundles tritonserver, its shared libraries and
# the Python backend. The wheel is only downloaded and unzipped (never pip-installed: it pins numpy<2).
# Usage: scripts/triton_server.sh [CACHE_DIR]   (default: build/triton, or $DER_TRITON_CACHE)
set -euo pipefail

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
    rm -rf "$DEST"
    mv "$TMP" "$DEST"  # atomic publish: a half-extracted tree is never seen as ready
    trap - EXIT
fi
echo "$BIN"
