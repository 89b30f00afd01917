#!/usr/bin/env bash
# The benchmarks (BENCHMARKS.md). Two kinds, both against the simulated region, as root:
#
#   bash scripts/bench.sh            the harness, scripts/bench/run.sh: recovery against the limit the
#                                    region recorded, against the AWS CLI user data, mass recovery under
#                                    EC2's throttling, the RTO/RPO model, the footprint (under 15 minutes)
#   bash scripts/bench.sh go [-count N]
#                                    the Go benchmarks of the packages: sim BenchmarkRestoreCycle (--speed 10,
#                                    target < 5 s), agent BenchmarkUpCrossAZRecovery and
#                                    BenchmarkHandoverAtDefaultDelays (in process, default delays)
#
# CI compiles all of them (go vet ./... builds scripts/bench and every test file) but runs none.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" != go ]; then
  exec bash scripts/bench/run.sh "$@"
fi
shift
count=1
if [ "${1:-}" = "-count" ] && [ -n "${2:-}" ]; then count=$2; fi
go test -run '^$' -bench 'RestoreCycle' -benchtime 3x -count "$count" ./sim/
go test -run '^$' -bench 'UpCrossAZRecovery|HandoverAtDefaultDelays' -benchtime 1x -count "$count" -timeout 30m ./agent/
