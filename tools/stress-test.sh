#!/usr/bin/env bash
# `make stress-test`: the whole suite three times in a row while two CPU-bound processes load the
# machine, each run within 10 minutes (docs/testing.md). Extra pytest arguments: PYTEST_ARGS.
set -euo pipefail
cd "$(dirname "$0")/.."
burners=()
for _ in 1 2; do
    python3 -c 'while True: pass' &
    burners+=("$!")
done
trap 'kill "${burners[@]}" 2>/dev/null || true' EXIT
for n in 1 2 3; do
    start=$(date +%s)
    echo "== stress run $n of 3 (load: $(cut -d' ' -f1-3 /proc/loadavg))"
    # `make test` itself (the same workers and flags); timeout signals its whole process group.
    timeout 600 make --no-print-directory test PYTEST_ARGS="${PYTEST_ARGS:-}" || { echo "stress run $n failed or took over 10 minutes" >&2; exit 1; }
    echo "== stress run $n passed in $(( $(date +%s) - start )) s (load: $(cut -d' ' -f1-3 /proc/loadavg))"
done
