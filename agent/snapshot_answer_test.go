package agent

import (
	"strconv"
	"testing"

	"github.com/handover/handover/cloud"
	"github.com/handover/handover/sim"
)

// TestCreateSnapshotAnswerLostMakesOneSnapshot: CreateSnapshot has no idempotency token, so when EC2
// carries a call out and its answer is lost (a connection reset), a blind retry makes a second snapshot
// (or, within 15 s of the first, meets SnapshotCreationPerVolumeRateExceeded and makes it later). With
// half the answers lost (and no rate limit, so that a blind retry succeeds at once), cloud.CreateSnapshot
// through the production SDK configuration still makes exactly one snapshot and returns it. Found by the
// fault-injection runs: down took two, three or four snapshots of one volume for one hand-over.
func TestCreateSnapshotAnswerLostMakesOneSnapshot(t *testing.T) {
	t.Parallel()
	for seed := range 8 {
		t.Run("seed="+strconv.Itoa(seed), func(t *testing.T) {
			t.Parallel()
			w := newDownWorld(t, func(o *sim.Options) {
				o.Seed, o.SnapshotInterval = int64(seed), -1
				o.Faults = sim.Faults{DropAfterRate: 0.5, AgentsOnly: true}
			})
			inst := w.runInstance("us-east-1a", groupTags, true)
			vol := w.createSlotVolume("us-east-1a", 1, nil)
			clients, err := cloud.NewClients(w.ctx(), w.agentEnv(inst, nil), "us-east-1")
			if err != nil {
				t.Fatal(err)
			}
			got, err := cloud.CreateSnapshot(w.ctx(), clients.EC2, cloud.SnapshotRequest{Group: w.group, Slot: cloud.DefaultSlot,
				Volume: cloud.Volume{ID: vol, Generation: 1}, InstanceID: inst, Consistent: true, Final: true, Description: "handover down (test): " + vol})
			if err != nil {
				t.Fatal(err)
			}
			snaps := w.slotSnapshots(cloud.DefaultSlot)
			var ids []string
			for _, s := range snaps {
				ids = append(ids, s.ID)
			}
			if len(snaps) != 1 || snaps[0].ID != got.ID || !snaps[0].Consistent || !snaps[0].Final {
				t.Errorf("CreateSnapshot returned %s; the volume has snapshots %v, want exactly that one (consistent, final)", got.ID, ids)
			}
		})
	}
}
