#!/usr/bin/env bash
# Install what is missing, then run the whole test suite (unit, logic, real Label Studio end-to-end, Ray).
# Extra arguments go to pytest, e.g. scripts/test.sh tests/test_engine.py -x
set -uo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh || exit 1
.venv/bin/python -m pytest "$@"
status=$?
if [ "$status" -eq 5 ]; then
  echo "pytest collected no tests: failing on purpose" >&2
  exit 1
fi
exit "$status"
