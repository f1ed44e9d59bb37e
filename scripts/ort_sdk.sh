#!/usr/bin/env bash
# Build a minimal ONNX Runtime C/C++ SDK (release-tarball layout: include/ + lib/) in build/deps/onnxruntime,
# once. No registry carries ONNX Runtime's release tarball, so:
#   include/  the official C/C++ headers (ORT_API_VERSION 29) from the npm package com.github.asus4.onnxruntime
#   lib/      symlinks to the libonnxruntime.so.1.* of the Python wheel in .venv, so the C++ and Python
#             runtimes run the same ONNX Runtime (headers of an older API version work with a newer library).
# Nothing fetched here is committed (build/ is git-ignored). With an official release, skip this script and
# configure CMake with -DONNXRUNTIME_ROOT=/path/to/onnxruntime-linux-x64-<version>.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
DEPS="$ROOT/build/deps"
SDK="$DEPS/onnxruntime"
NPM_PKG="com.github.asus4.onnxruntime@0.4.9"
HEADERS_IN="package/Plugins/iOS~/onnxruntime.xcframework/ios-arm64_x86_64-simulator/onnxruntime.framework/Headers"

# The wheel's library (one version for both runtimes).
lib=$(ls "$VENV"/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.1.* 2>/dev/null | sort -V | tail -n 1 || true)
if [ -z "$lib" ]; then
  echo "error: no libonnxruntime.so.1.* in $VENV (install the Python package first: make venv)" >&2
  exit 2
fi

if [ ! -f "$SDK/include/onnxruntime_cxx_api.h" ]; then
  if ! command -v npm >/dev/null && [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    echo "ort_sdk: installing npm" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends npm >/dev/null \
      || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends npm >/dev/null; }
  fi
  command -v npm >/dev/null || { echo "error: npm is needed to fetch the ONNX Runtime headers (apt-get install npm)" >&2; exit 2; }
  mkdir -p "$DEPS"
  tmp=$(mktemp -d "$DEPS/ort-headers.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  echo "ort_sdk: fetching ONNX Runtime headers ($NPM_PKG)" >&2
  (cd "$tmp" && npm pack --silent "$NPM_PKG" >/dev/null)
  tarball=$(ls "$tmp"/*.tgz)
  # Only the official C/C++ headers; the 150 MB tarball is deleted right after.
  tar -xzf "$tarball" -C "$tmp" --wildcards "$HEADERS_IN/*.h"
  rm -f "$tarball"
  grep -q "define ORT_API_VERSION" "$tmp/$HEADERS_IN/onnxruntime_c_api.h" \
    || { echo "error: $NPM_PKG has no onnxruntime_c_api.h at the expected place" >&2; exit 2; }
  rm -rf "$SDK/include"
  mkdir -p "$SDK/include"
  cp "$tmp/$HEADERS_IN"/*.h "$SDK/include/"
fi

# lib/ always follows the venv's current wheel (an upgraded onnxruntime re-points the links).
mkdir -p "$SDK/lib"
name=$(basename "$lib")
ln -sfn "$lib" "$SDK/lib/$name"
ln -sfn "$name" "$SDK/lib/libonnxruntime.so.1"
ln -sfn "libonnxruntime.so.1" "$SDK/lib/libonnxruntime.so"
echo "ort_sdk: $SDK (headers API $(sed -n 's/^#define ORT_API_VERSION \([0-9]*\).*/\1/p' "$SDK/include/onnxruntime_c_api.h"), library $name)" >&2
