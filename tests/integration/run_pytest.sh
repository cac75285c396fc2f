#!/usr/bin/env bash
# Runs one integration test file under pytest: run_pytest.sh PYTHON FILE.
# Exit 77 (skipped, under ctest) when PYTHON lacks grpc, protobuf or pytest;
# "no tests collected" is a failure, never a pass.
set -u

if [ $# -ne 2 ]; then
  echo "usage: $0 PYTHON FILE" >&2
  exit 2
fi
python=$1
file=$2

if ! missing=$("$python" - 2>&1 <<'PY'
import importlib
gone = []
for mod in ("grpc", "google.protobuf", "pytest"):
    try:
        importlib.import_module(mod)
    except Exception:
        gone.append(mod)
print(" ".join(gone))
raise SystemExit(1 if gone else 0)
PY
); then
  echo "SKIP: $python lacks Python modules: ${missing:-(interpreter did not run)}" >&2
  echo "SKIP: install python3-grpcio python3-protobuf python3-pytest (scripts/deps)" >&2
  echo "SKIP: ${file##*/} was NOT run" >&2
  exit 77
fi

# Keep the source tree free of __pycache__.
export PYTHONDONTWRITEBYTECODE=1
"$python" -m pytest -q -rs -p no:cacheprovider "$file"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "FAIL: pytest collected no tests from $file" >&2
  exit 1
fi
exit "$rc"
