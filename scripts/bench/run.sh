#!/usr/bin/env bash
# The benchmarks of BENCHMARKS.md, as one command (run as root: volumes are loop devices, filesystems are
# made and mounted). Builds bin/handover, then runs every section against the simulated region and writes
# the tables to bench-results/RESULTS.md (also on stdout), the raw figures (every run) to
# bench-results/*.json and each run's log to bench-results/logs/. Extra arguments go to the harness
# (go run ./scripts/bench -h lists them), e.g. -sections recovery -rounds 3.
set -euo pipefail
cd "$(dirname "$0")/../.."
[ "$(id -u)" = 0 ] || { echo "run as root: the benchmarks mount real filesystems on loop devices"; exit 1; }
make build >/dev/null
out=${BENCH_OUT:-bench-results}
mkdir -p "$out"
go build -o "$out/bench" ./scripts/bench
"$out/bench" -handover bin/handover -script scripts/bench/awscli-user-data.sh -out "$out" "$@" | tee "$out/RESULTS.md"
