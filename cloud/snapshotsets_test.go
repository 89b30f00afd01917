package cloud

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/handover/handover/internal/fail"
)

var setT0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// member is a completed, consistent snapshot of slot in set (size n) taken at minute min; set "" is one
// taken before sets.
func member(id, slot, set string, n, min int) Snapshot {
	tags := map[string]string{TagSlot: slot}
	if set != "" {
		tags[TagSet], tags[TagSetSize] = set, strconv.Itoa(n)
	}
	return Snapshot{ID: id, State: SnapshotCompleted, Generation: 1, Consistent: true, StartTime: setT0.Add(time.Duration(min) * time.Minute), Tags: tags}
}

func TestChooseSet(t *testing.T) {
	t.Parallel()
	slots := []string{"data", "wal"}
	errored := member("d3", "data", "s3", 2, 30)
	errored.State = SnapshotError
	tests := []struct {
		name      string
		snaps     map[string][]Snapshot
		pin       PinKind
		pinSet    string
		want      string // chosen set, "" for none
		wantNewer []string
	}{
		{
			name: "the newest complete set",
			snaps: map[string][]Snapshot{
				"data": {member("d2", "data", "s2", 2, 20), member("d1", "data", "s1", 2, 10)},
				"wal":  {member("w2", "wal", "s2", 2, 20), member("w1", "wal", "s1", 2, 10)},
			},
			want: "s2",
		},
		{
			name: "a run killed between its two snapshots: data has a newer one, the older complete set wins",
			snaps: map[string][]Snapshot{
				"data": {member("d2", "data", "s2", 2, 20), member("d1", "data", "s1", 2, 10)},
				"wal":  {member("w1", "wal", "s1", 2, 10)},
			},
			want: "s1", wantNewer: []string{"s2"},
		},
		{
			name: "a member in error makes its set incomplete",
			snaps: map[string][]Snapshot{
				"data": {errored, member("d1", "data", "s1", 2, 10)},
				"wal":  {member("w3", "wal", "s3", 2, 30), member("w1", "wal", "s1", 2, 10)},
			},
			want: "s1", wantNewer: []string{"s3"},
		},
		{
			name: "only an incomplete set: none",
			snaps: map[string][]Snapshot{
				"data": {member("d2", "data", "s2", 2, 20)},
				"wal":  {member("w0", "wal", "", 0, 5)},
			},
			wantNewer: []string{"s2"},
		},
		{
			name: "a set of one slot does not cover a group whose other slot has sets",
			snaps: map[string][]Snapshot{
				"data": {member("d2", "data", "s2", 1, 20), member("d1", "data", "s1", 2, 10)},
				"wal":  {member("w1", "wal", "s1", 2, 10)},
			},
			want: "s1", wantNewer: []string{"s2"},
		},
		{
			name: "a slot new to the group (no set snapshots) does not make the others' sets incomplete",
			snaps: map[string][]Snapshot{
				"data": {member("d1", "data", "s1", 1, 10)},
			},
			want: "s1",
		},
		{
			name: "a pinned set is kept even when a newer complete one appeared",
			snaps: map[string][]Snapshot{
				"data": {member("d2", "data", "s2", 2, 20), member("d1", "data", "s1", 2, 10)},
				"wal":  {member("w2", "wal", "s2", 2, 20), member("w1", "wal", "s1", 2, 10)},
			},
			pin: PinSet, pinSet: "s1", want: "s1",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ch := ChooseSet(slots, tc.snaps, tc.pin, tc.pinSet)
			got := ""
			if ch.Chosen != nil {
				got = ch.Chosen.ID
			}
			if got != tc.want {
				t.Errorf("chose %q, want %q", got, tc.want)
			}
			var newer []string
			for _, s := range ch.Newer {
				newer = append(newer, s.ID)
			}
			if strings.Join(newer, ",") != strings.Join(tc.wantNewer, ",") {
				t.Errorf("newer incomplete sets %v, want %v", newer, tc.wantNewer)
			}
		})
	}
}

// TestPlanSlotRestoresOnlyCompleteSets: with the group's volumes gone, each slot of a two-slot group
// restores its member of the newest complete set, says that a newer set is incomplete, and refuses when
// no set is complete; a group of one slot restores its newest snapshot as before.
func TestPlanSlotRestoresOnlyCompleteSets(t *testing.T) {
	t.Parallel()
	slots := []string{"data", "wal"}
	snaps := map[string][]Snapshot{
		"data": {member("d2", "data", "s2", 2, 20), member("d1", "data", "s1", 2, 10)},
		"wal":  {member("w1", "wal", "s1", 2, 10)},
	}
	plan := func(slot string, sets *SetChoice) SlotPlan {
		return PlanSlot(PlanInput{InstanceID: "i-new", AZ: "us-east-1b", Group: "g", Slot: slot,
			View: SlotView{Snapshots: snaps[slot]}, Sets: sets})
	}
	ch := ChooseSet(slots, snaps, PinNone, "")
	for slot, want := range map[string]string{"data": "d1", "wal": "w1"} {
		p := plan(slot, &ch)
		if p.Action != PlanRestore || p.Snapshot.ID != want || p.FromSet != "s1" {
			t.Errorf("slot %s: %s %s from set %q (%s), want restore %s from s1", slot, p.Action, p.Snapshot.ID, p.FromSet, p.Why, want)
		}
		if slot == "data" && !strings.Contains(p.Warn, "older complete snapshot set s1") {
			t.Errorf("slot data: warning %q does not say the older complete set is restored", p.Warn)
		}
	}
	if p := plan("data", nil); p.Action != PlanRestore || p.Snapshot.ID != "d2" {
		t.Errorf("a lone slot: %s %s, want restore d2 (its newest)", p.Action, p.Snapshot.ID)
	}

	delete(snaps, "wal")
	snaps["wal"] = nil
	snaps["data"] = snaps["data"][:1] // only the incomplete s2
	none := ChooseSet(slots, snaps, PinNone, "")
	p := plan("data", &none)
	if p.Action != PlanRefuse || fail.Code(p.Err) != fail.CodePrecondition || !strings.Contains(p.Err.Error(), "no complete snapshot set") {
		t.Errorf("no complete set: %s %v, want a refusal (exit 3) naming it", p.Action, p.Err)
	}

	// A slot restored from its volume's last writes pins that: another slot of the group never restores a
	// set's older moment instead.
	last := ChooseSet(slots, map[string][]Snapshot{"data": {member("d1", "data", "s1", 2, 10)}, "wal": {member("w1", "wal", "s1", 2, 10)}}, PinLastState, "")
	if p := plan("data", &last); p.Action != PlanRefuse || fail.Code(p.Err) != fail.CodeFailed {
		t.Errorf("pinned to the last state: %s %v, want a refusal (exit 1)", p.Action, p.Err)
	}
}

func TestSetPinFirstClaimHolds(t *testing.T) {
	t.Parallel()
	var p SetPin
	if _, _, ok := p.Claim(PinSet, "s1"); !ok {
		t.Fatal("first claim refused")
	}
	if _, _, ok := p.Claim(PinSet, "s1"); !ok {
		t.Error("the same claim again refused")
	}
	if k, s, ok := p.Claim(PinSet, "s2"); ok || k != PinSet || s != "s1" {
		t.Errorf("second set claimed: %v %q %v, want s1 to hold", k, s, ok)
	}
	if _, _, ok := p.Claim(PinLastState, ""); ok {
		t.Error("last state claimed over a pinned set")
	}
}
