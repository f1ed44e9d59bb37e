#!/usr/bin/env bash
# Run every test. pytest's exit code 5 ("no tests collected") is a failure here, never a pass.
set -uo pipefail
pytest "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "error: pytest collected no tests" >&2
  exit 1
fi
exit "$rc"
