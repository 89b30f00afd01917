package cloud

import (
	"io"
	"log/slog"
	"slices"
	"testing"
	"time"
)

// TestPlanRetire: older generations are all tagged superseded; the keep newest stay; of the rest, only
// detached, available volumes that a completed snapshot already holds are deleted, and only once a
// snapshot of the current volume has completed: never anything newer than what the current volume was
// restored from, never anything when no snapshot has completed.
func TestPlanRetire(t *testing.T) {
	t.Parallel()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	at := time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)
	v := func(id string, gen int, state string) Volume {
		return Volume{ID: id, Generation: gen, State: state, AZ: "us-east-1a", CreateTime: at.Add(time.Duration(gen) * time.Hour)}
	}
	snap := func(id, state string, gen int, source string) Snapshot {
		return Snapshot{ID: id, State: state, Generation: gen, SourceVolume: source, StartTime: at.Add(time.Duration(gen) * time.Hour)}
	}
	cur := Volume{ID: "vol-6", Generation: 6, State: "in-use", SnapshotID: "snap-5"}
	older := []Volume{v("vol-5", 5, "available"), v("vol-4", 4, "available"), v("vol-3", 3, "available"), v("vol-2", 2, "in-use"), v("vol-1", 1, "available")}
	older[3].Attachments = []Attachment{{InstanceID: "i-stopped", State: "attached"}}
	all := append([]Volume{cur}, older...)
	// The current volume's own snapshot has completed: only then does anything older go.
	normal := []Snapshot{snap("snap-6", SnapshotCompleted, 6, "vol-6"), snap("snap-5", SnapshotCompleted, 5, "vol-5"), snap("snap-4", SnapshotCompleted, 4, "vol-4")}
	justMoved := normal[1:] // the newest completed snapshot is the one the current volume was restored from

	tests := []struct {
		name  string
		vols  []Volume
		snaps []Snapshot
		keep  int
		want  []string // deleted
	}{
		{name: "keep 1: the previous generation stays, the attached one too", vols: all, snaps: normal, keep: 1, want: []string{"vol-4", "vol-3", "vol-1"}},
		{name: "keep 3", vols: all, snaps: normal, keep: 3, want: []string{"vol-1"}},
		{name: "keep 0: the previous generation goes too once the current volume's snapshot completed", vols: all, snaps: normal, keep: 0, want: []string{"vol-5", "vol-4", "vol-3", "vol-1"}},
		{name: "just moved: no snapshot of the current volume yet keeps everything", vols: all, snaps: justMoved, keep: 0},
		{name: "no completed snapshot: nothing", vols: all, snaps: []Snapshot{snap("snap-5", SnapshotPending, 5, "vol-5")}, keep: 0},
		{name: "the current volume's snapshot still pending: nothing", vols: all,
			snaps: []Snapshot{snap("snap-6p", SnapshotPending, 6, "vol-6"), snap("snap-3", SnapshotCompleted, 3, "vol-3")}, keep: 0},
		{name: "restored from an older snapshot (data loss path): volumes newer than it stay", vols: []Volume{{ID: "vol-6", Generation: 6, State: "in-use", SnapshotID: "snap-2"},
			v("vol-5", 5, "available"), v("vol-2", 2, "available"), v("vol-1", 1, "available")},
			snaps: []Snapshot{snap("snap-6", SnapshotCompleted, 6, "vol-6"), snap("snap-2", SnapshotCompleted, 2, "vol-2")}, keep: 0, want: []string{"vol-2", "vol-1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			untagged, doomed := planRetire(tt.vols[0], tt.vols, tt.snaps, tt.keep, log)
			if len(untagged) != len(tt.vols)-1 {
				t.Errorf("tagged %v, want every older volume", untagged)
			}
			var got []string
			for _, d := range doomed {
				got = append(got, d.ID)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("deleted %v, want %v", got, tt.want)
			}
		})
	}
}
