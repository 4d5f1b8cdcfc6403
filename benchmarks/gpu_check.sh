#!/usr/bin/env bash
# GPU readiness check (issue 15, item 8): the training hook, the rank-deficient solve next to
# torch's 'gels', and the API and diagnose, on cuda, each against its CPU answer. Under 5 minutes
# on a CUDA machine; appends its table to benchmarks/RESULTS.md (section gpu_check-cuda).
#
#   bash benchmarks/gpu_check.sh
#
# Without CUDA it stops with a message (exit 2). For a CPU dry run of the same steps:
#   python benchmarks/gpu_check.py --device cpu --no-record
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
TIME_BOUND_S=300

# The checkout's package, also in the mace_run_train and mace-e0 it starts.
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

if ! python -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    echo "gpu_check: no CUDA device is available to torch (torch.cuda.is_available() is False); nothing was run." >&2
    echo "gpu_check: run it on a CUDA machine, or 'python benchmarks/gpu_check.py --device cpu --no-record' for a CPU dry run." >&2
    exit 2
fi
python -c 'import torch; print(f"gpu_check: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}")'

cd "$ROOT"
status=0
timeout "$TIME_BOUND_S" python "$HERE/gpu_check.py" --device cuda "$@" || status=$?
if [ "$status" -eq 124 ]; then
    echo "gpu_check: FAILED: past the ${TIME_BOUND_S} s bound" >&2
elif [ "$status" -ne 0 ]; then
    echo "gpu_check: FAILED (exit $status): see the [FAIL] lines above" >&2
else
    echo "gpu_check: all checks ok; results in benchmarks/RESULTS.md (section gpu_check-cuda)"
fi
exit "$status"
