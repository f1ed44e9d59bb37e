#!/usr/bin/env bash
# `make test`'s bounded fuzz run of the C++ image layer (runtime/cpp/fuzz, issue 19):
#   bash scripts/fuzz.sh [SECONDS]        fuzz for SECONDS (default $DER_FUZZ_SECONDS, else 60)
#   bash scripts/fuzz.sh --tool           only build build/fuzz/der_image_tool (ASan + UBSan), for
#                                         DER_IMAGE_TOOL=... pytest tests/cpp/test_image_parity.py
# Builds fuzz_decode with clang's libFuzzer + ASan + UBSan (installs clang and libclang-rt-dev when missing and
# root, as scripts/cpp_build.sh does), seeds it from the project's corpora (runtime/cpp/fuzz/seeds.py), replays
# tests/fuzz_regressions/, fuzzes, and copies any crashing input there (exit 1): tests/cpp/test_image_parity.py
# replays those files through der_image_tool on every test run.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${DER_FUZZ_DIR:-$ROOT/build/fuzz}"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
JOBS="${CPP_JOBS:-2}"
TOOL_ONLY=0
if [ "${1:-}" = "--tool" ]; then TOOL_ONLY=1; shift; fi
FUZZ_SECONDS="${1:-${DER_FUZZ_SECONDS:-60}}"
REGRESSIONS="$ROOT/tests/fuzz_regressions"
CPP="$ROOT/runtime/cpp"

CXX="$(command -v clang++ || command -v clang++-14 || true)"
if [ -z "$CXX" ] || ! echo 'extern "C" int LLVMFuzzerTestOneInput(const unsigned char*, unsigned long) { return 0; }' \
    | "$CXX" -x c++ - -fsanitize=fuzzer -o /dev/null 2>/dev/null; then
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
    echo "error: fuzzing needs clang with libFuzzer: apt-get install clang libclang-rt-14-dev (Debian 12)" >&2
    exit 2
  fi
  echo "fuzz: installing clang and libFuzzer" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q --no-install-recommends clang libclang-rt-14-dev >/dev/null \
    || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends clang libclang-rt-14-dev >/dev/null; }
  CXX="$(command -v clang++ || command -v clang++-14)"
fi

# --- build: the image layer's sources with coverage + ASan + UBSan, rebuilt when anything they use changed ------
SAN=(-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer)
FLAGS=(-std=c++17 -O1 -g -ffp-contract=off -DDER_HAVE_WEBP=1 -DDER_HAVE_TIFF=1 -I"$CPP/include" -I"$CPP/src"
       $(pkg-config --cflags libwebp libwebpdemux libtiff-4))
LIBS=(-ljpeg -lpng -lz $(pkg-config --libs libwebp libwebpdemux libtiff-4))
mkdir -p "$OUT/obj"
SOURCES=("$CPP"/src/image/*.cpp)
stamp="$OUT/fuzz_decode"
if [ ! -x "$stamp" ] || [ ! -x "$OUT/der_image_tool" ] || [ -n "$(find "$CPP/src/image" "$CPP/include/der" "$CPP/fuzz" \
    "$CPP/tests/image/der_image_tool.cpp" "$0" -newer "$stamp" -type f | head -1)" ]; then
  echo "fuzz: building $OUT/fuzz_decode ($CXX, ASan + UBSan)" >&2
  printf '%s\n' "${SOURCES[@]}" | xargs -P "$JOBS" -I{} sh -c \
    'exec "$0" "$@" -c "{}" -o "'"$OUT"'/obj/$(basename "{}" .cpp).o"' \
    "$CXX" "${FLAGS[@]}" "${SAN[@]}" -fsanitize=fuzzer-no-link
  "$CXX" "${FLAGS[@]}" "${SAN[@]}" -fsanitize=fuzzer "$CPP/fuzz/fuzz_decode.cpp" "$OUT"/obj/*.o "${LIBS[@]}" \
    -o "$OUT/fuzz_decode.tmp"
  "$CXX" "${FLAGS[@]}" "${SAN[@]}" "$CPP/tests/image/der_image_tool.cpp" "$OUT"/obj/*.o "${LIBS[@]}" \
    -o "$OUT/der_image_tool"
  mv "$OUT/fuzz_decode.tmp" "$stamp"
fi
[ "$TOOL_ONLY" = 1 ] && { echo "fuzz: built $OUT/der_image_tool" >&2; exit 0; }

# --- seeds (regenerated when the generator changes), then the regressions, then the bounded run -----------------
if [ ! -d "$OUT/seeds" ] || [ "$CPP/fuzz/seeds.py" -nt "$OUT/seeds" ]; then
  rm -rf "$OUT/seeds"
  "$PY" "$CPP/fuzz/seeds.py" "$OUT/seeds" >&2
fi
mkdir -p "$OUT/corpus" "$OUT/crashes"
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1}"
mapfile -t replays < <(find "$REGRESSIONS" -type f ! -name '*.md' 2>/dev/null | sort)
if [ "${#replays[@]}" -gt 0 ]; then
  "$stamp" -runs=1 "${replays[@]}" >"$OUT/replay.log" 2>&1 \
    || { tail -40 "$OUT/replay.log" >&2; echo "error: a file in tests/fuzz_regressions fails again" >&2; exit 1; }
fi
rm -f "$OUT"/crashes/*
set +e
"$stamp" -max_total_time="$FUZZ_SECONDS" -timeout=30 -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1 \
  -dict="$CPP/fuzz/image.dict" -artifact_prefix="$OUT/crashes/" "$OUT/corpus" "$OUT/seeds" >"$OUT/fuzz.log" 2>&1
rc=$?
set -e
found=("$OUT"/crashes/*)
if [ "$rc" -ne 0 ] || [ -e "${found[0]}" ]; then
  tail -60 "$OUT/fuzz.log" >&2
  mkdir -p "$REGRESSIONS"
  for f in "${found[@]}"; do
    [ -e "$f" ] && cp "$f" "$REGRESSIONS/$(basename "$f").bin" && echo "fuzz: saved $REGRESSIONS/$(basename "$f").bin" >&2
  done
  echo "error: fuzz_decode failed (exit $rc); fix it, the input now replays in tests/cpp/test_image_parity.py" >&2
  exit 1
fi
grep -E "^(stat::number_of_executed_units|stat::peak_rss_mb|#[0-9]+ *DONE)" "$OUT/fuzz.log" | tr '\n' ' ' >&2 || true
echo "fuzz: ${FUZZ_SECONDS}s, no crash (log: $OUT/fuzz.log)" >&2
