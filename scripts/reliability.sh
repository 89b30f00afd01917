#!/usr/bin/env bash
# shellcheck disable=SC2317 # the sections are functions called by name, through "$s" at the end
# The long reliability runs of RELIABILITY.md, against the simulated region (run as root: loop devices,
# mkfs, mount). CI plays a few of each (fixed seeds); this plays the full counts and prints the figures:
#
#   fault injection   TestChaosHandover      CHAOS_RUNS (200) hand-overs with 10% of the calls failing
#   crash anywhere    TestCrashAtEveryStep   every named step of up and down, killed, then rerun
#                     TestCrashAnywhere      CRASH_RUNS (200) kills at a random moment, then rerun
#   races             TestRaceUnderFaults    RACE_ROUNDS (100) rounds of each race with the faults on
#   data              TestDataSurvivesEveryPath and the data tests of the hand-over paths
#
# Usage: sudo bash scripts/reliability.sh [fault|crash|race|data ...]   (default: all four)
# Settings (environment): CHAOS_RUNS, CHAOS_SEED (first seed, 1), CRASH_RUNS, CRASH_SEED, RACE_ROUNDS,
# PARALLEL (tests at once, 4), RACE (1: with the race detector, the default; 0: without), OUT (where the
# logs go; default a new directory under /tmp). A run that fails names its seed: CHAOS_SEED=S CHAOS_RUNS=1
# replays it. Exit status: 0 when every section passed.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
if [ "$(id -u)" != 0 ]; then
	echo "reliability.sh: run as root (the tests mount real filesystems on loop devices)" >&2
	exit 2
fi
CHAOS_RUNS=${CHAOS_RUNS:-200}
CHAOS_SEED=${CHAOS_SEED:-1}
CRASH_RUNS=${CRASH_RUNS:-200}
CRASH_SEED=${CRASH_SEED:-1}
RACE_ROUNDS=${RACE_ROUNDS:-100}
PARALLEL=${PARALLEL:-4}
OUT=${OUT:-$(mktemp -d /tmp/reliability.XXXXXX)}
mkdir -p "$OUT"
raceflag=(-race)
if [ "${RACE:-1}" = 0 ]; then raceflag=(); fi
sections=("$@")
if [ ${#sections[@]} -eq 0 ]; then sections=(fault crash race data); fi
status=0

# run NAME REGEX [ENV=VALUE...]: go test -v of the tests matching REGEX, its log in $OUT/NAME.log.
run() {
	local name=$1 regex=$2
	shift 2
	local start=$SECONDS
	echo "== $name: go test ${raceflag[*]} -count=1 -v -parallel $PARALLEL -timeout 6h -run '$regex' ./agent/ ${*:+($*)}"
	env "$@" go test "${raceflag[@]}" -count=1 -v -parallel "$PARALLEL" -timeout 6h -run "$regex" ./agent/ >"$OUT/$name.log" 2>&1
	local code=$?
	echo "   exit $code after $((SECONDS - start)) s; log $OUT/$name.log"
	if [ "$code" -ne 0 ]; then
		status=1
		grep -E '^\s*--- FAIL' "$OUT/$name.log" | head -40 | sed 's/^\s*/   /'
	fi
}

# figure KEY LINE: the value of KEY=... in a figures line.
figure() { sed -n "s/.*\b$1=\([^ ]*\).*/\1/p" <<<"$2"; }

fault() {
	run fault '^TestChaosHandover$' HANDOVER_CHAOS_RUNS="$CHAOS_RUNS" HANDOVER_CHAOS_SEED="$CHAOS_SEED"
	local summary
	summary=$(grep -h 'chaos-summary' "$OUT/fault.log" | tail -1)
	if [ -z "$summary" ]; then
		echo "   no chaos-summary line: the test did not get to the end"
		return
	fi
	echo "   runs $(figure runs "$summary"), converged $(figure converged "$summary")"
	for k in leaked dup_generation eip_two_holders eip_reassociated data_mismatches mounted_detach; do
		echo "   $k: $(figure "$k" "$summary")   (must be 0)"
	done
	echo "   agent API calls $(figure agent_calls "$summary"), answered with an injected error or a dropped connection $(figure faulted "$summary")"
	echo "   termination hooks completed by down $(figure hook_completed_by_down "$summary"), replacements started $(figure replacements "$summary"), runs with a second snapshot $(figure runs_with_extra_snapshot "$summary")"
	grep -h 'chaos-figures' "$OUT/fault.log" | grep -v 'converged=true' | sed 's/^.*chaos-figures/   NOT CONVERGED:/'
}

crash() {
	run crash '^(TestCrashAtEveryStep|TestCrashWhileFrozenThawedByWatch|TestCrashAnywhere)$' HANDOVER_CRASH_RUNS="$CRASH_RUNS" HANDOVER_CRASH_SEED="$CRASH_SEED"
	echo "   named steps (step/setup: result):"
	grep -E '^\s*--- (PASS|FAIL): TestCrashAtEveryStep/' "$OUT/crash.log" |
		sed -E 's/^\s*--- (PASS|FAIL): TestCrashAtEveryStep\/(.*) \(.*/\2: \1/' | sort | sed 's/^/     /'
	grep -E '^\s*--- (PASS|FAIL): TestCrashWhileFrozenThawedByWatch' "$OUT/crash.log" | sed -E 's/^\s*--- (PASS|FAIL): ([^ ]*) .*/     \2: \1/'
	local pass fail killed
	pass=$(grep -cE '^\s*--- PASS: TestCrashAnywhere/' "$OUT/crash.log")
	fail=$(grep -cE '^\s*--- FAIL: TestCrashAnywhere/' "$OUT/crash.log")
	killed=$(grep -h 'crash-figures' "$OUT/crash.log" | grep -c 'killed=true')
	echo "   random moments: $((pass + fail)) runs ($killed killed before they ended), converged after the rerun $pass, failed $fail"
	grep -h 'crash-figures' "$OUT/crash.log" | sed -n 's/.*kind=\([^ ]*\).*/\1/p' | sort | uniq -c | sed 's/^ */     setup /'
	grep -E '^\s*--- FAIL: TestCrashAnywhere/' "$OUT/crash.log" | sed 's/^\s*/   /'
}

race() {
	run race '^TestRaceUnderFaults$' HANDOVER_RACE_FAULT_ROUNDS="$RACE_ROUNDS"
	grep -h 'race-figures' "$OUT/race.log" | sed 's/^.*race-figures/  /'
}

data() {
	run data '^(TestDataSurvivesEveryPath|TestDataAbruptLossWithConsistencyDelay|TestDownThenSameAZReplacementReattaches|TestUpPrefersTheSnapshotDownMade|TestOrphan|TestRollback|TestDownRerunConverges)$'
	grep -E '^\s*--- (PASS|FAIL): (TestDataSurvivesEveryPath|TestDataAbruptLossWithConsistencyDelay|TestDownThenSameAZReplacementReattaches|TestUpPrefersTheSnapshotDownMade|TestOrphan|TestRollback|TestDownRerunConverges)' "$OUT/data.log" |
		sed -E 's/^\s*--- (PASS|FAIL): ([^ ]*) .*/     \2: \1/'
}

for s in "${sections[@]}"; do
	case $s in
	fault | crash | race | data) "$s" ;;
	*)
		echo "reliability.sh: unknown section $s (want fault, crash, race or data)" >&2
		exit 2
		;;
	esac
done
exit $status
