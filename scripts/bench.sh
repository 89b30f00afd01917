#!/usr/bin/env bash
# The speed targets, shown as Go benchmarks against the simulated region (run as root: real loop devices).
# Each benchmark reports its own target next to what it measured and fails when it misses it:
#   sim   BenchmarkRestoreCycle              create, snapshot, restore in the other AZ, attach at --speed 10: < 5 s
#   agent BenchmarkUpCrossAZRecovery         `handover up` cross-AZ at default delays: <= critical path + 1 s
#   agent BenchmarkHandoverAtDefaultDelays   trigger seen -> replacement has data and EIP: <= critical path + 2 s
# They take about a minute each at AWS-like delays. Pass -count N to repeat (e.g. for benchstat).
set -euo pipefail
cd "$(dirname "$0")/.."
count=1
if [ "${1:-}" = "-count" ] && [ -n "${2:-}" ]; then count=$2; fi
go test -run '^$' -bench 'RestoreCycle' -benchtime 3x -count "$count" ./sim/
go test -run '^$' -bench 'UpCrossAZRecovery|HandoverAtDefaultDelays' -benchtime 1x -count "$count" -timeout 30m ./agent/
