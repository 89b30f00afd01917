package agent

import (
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/handover/handover/sim"
)

// raceFaults are chaosFaults with the races' consistency delay (raceLag): every racer's calls are hit.
func raceFaults(o *sim.Options) {
	o.Faults = chaosFaults()
	o.Faults.ConsistencyDelay = raceLag
}

// raceFaultRounds is how many rounds each race plays under faults: HANDOVER_RACE_FAULT_ROUNDS, default 10
// (scripts/reliability.sh plays the 100).
func raceFaultRounds(t *testing.T) int { return envCount(t, "HANDOVER_RACE_FAULT_ROUNDS", 10) }

// TestRaceUnderFaults: the fence's two races (TestRaceFirstBoot with two claimants in two zones and no
// volume yet; TestRaceReplacementsOfAStoppedHolder) with a tenth of the racers' API calls failing
// (chaosFaults: throttling, internal errors, connections reset before or after the call, slow answers)
// and the consistency delay on. Each round must end as without faults: exactly one winner with the
// address and the data, every loser exit 4 with one line having made no filesystem and no mount, no
// generation with two volumes (checkOneWinner). The summary line counts the rounds that did.
func TestRaceUnderFaults(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	for _, race := range []struct {
		name  string
		round func(t *testing.T, round int)
	}{
		{"first boot", func(t *testing.T, round int) { raceFirstBootRound(t, round, 2, raceFaults) }},
		{"stopped holder", func(t *testing.T, round int) { raceStoppedHolderRound(t, round, raceFaults) }},
	} {
		t.Run(race.name, func(t *testing.T) {
			t.Parallel()
			rounds := raceFaultRounds(t)
			var failed atomic.Int32
			t.Run("rounds", func(t *testing.T) {
				for round := range rounds {
					t.Run(strconv.Itoa(round), func(t *testing.T) {
						t.Parallel()
						defer func() {
							if t.Failed() {
								failed.Add(1)
							}
						}()
						race.round(t, round)
					})
				}
			})
			t.Logf("race-figures race=%q rounds=%d one_winner_losers_fenced_nothing_forked=%d failed=%d",
				race.name, rounds, rounds-int(failed.Load()), failed.Load())
		})
	}
}
