#!/usr/bin/env bash
# The one-command device check (see benchmarks/gpu_check.py): parity on the device, bf16 drift, model
# throughput, end-to-end infer. One table; exit 1 when a parity check fails.
#   bash benchmarks/gpu_check.sh [--device cuda|cuda:N|cpu] [--quick]
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-.venv/bin/python}"
[ -x "$python" ] || python="$(command -v python3)"
exec "$python" benchmarks/gpu_check.py "$@"
