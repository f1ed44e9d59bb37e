#!/usr/bin/env bash
# `make cpp`: build the C++ SDK (der_runtime, der-infer-cpp, tests) into build/cpp. On a fresh machine it first
# installs the missing Debian packages (only those `dpkg -s` reports missing; needs root, as in CI) and the
# ONNX Runtime SDK (scripts/ort_sdk.sh, cached in build/deps); OpenVINO from .venv's wheel when installed.
# Re-running only rebuilds what changed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${CPP_BUILD_DIR:-$ROOT/build/cpp}"
JOBS="${CPP_JOBS:-2}"
# Toolchain, codecs (libjpeg-turbo, libpng, libwebp, libtiff), JSON, GoogleTest. npm (for the ONNX
# Runtime headers) is checked by scripts/ort_sdk.sh as a command: it often comes with nodejs, not Debian's npm.
PACKAGES=(cmake g++ make pkg-config libjpeg62-turbo-dev libpng-dev libwebp-dev libtiff-dev
          nlohmann-json3-dev libgtest-dev)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
    echo "error: missing packages ${missing[*]}; install them (apt-get install ${missing[*]}) or run as root" >&2
    exit 2
  fi
  echo "cpp: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null \
    || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null; }
fi

bash "$ROOT/scripts/ort_sdk.sh"
# OpenVINO (optional backend): the pip wheel in .venv carries the C++ headers and OpenVINOConfig.cmake.
OV_ARGS=()
if [ -x "$ROOT/.venv/bin/python" ] && OV_DIR="$("$ROOT/.venv/bin/python" -c \
    'import openvino, os; print(os.path.dirname(openvino.__file__) + "/cmake")' 2>/dev/null)" \
    && [ -f "$OV_DIR/OpenVINOConfig.cmake" ]; then
  OV_ARGS=(-DOpenVINO_DIR="$OV_DIR")
fi
cmake -S "$ROOT/runtime/cpp" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release \
  -DONNXRUNTIME_ROOT="$ROOT/build/deps/onnxruntime" ${OV_ARGS[@]+"${OV_ARGS[@]}"} >/dev/null
cmake --build "$BUILD" -j "$JOBS"
echo "cpp: built $BUILD/der-infer-cpp" >&2
