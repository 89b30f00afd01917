package cloud

import (
	"strings"
	"testing"
)

// TestShapeTagsRoundTrip: the tags a snapshot gets record the volume's shape, and reading them back gives
// the same shape; IOPS and throughput of types without them are not recorded.
func TestShapeTagsRoundTrip(t *testing.T) {
	t.Parallel()
	v := Volume{VolumeType: "gp3", SizeGiB: 200, IOPS: 6000, Throughput: 500, Encrypted: true, KMSKeyID: "arn:aws:kms:us-east-1:123456789012:key/k1"}
	got := recordedShapeOf(ShapeTags(v))
	want := RecordedShape{Type: "gp3", SizeGiB: 200, IOPS: 6000, Throughput: 500, KMSKeyID: v.KMSKeyID}
	if got != want {
		t.Errorf("round trip: %+v, want %+v", got, want)
	}
	gp2 := ShapeTags(Volume{VolumeType: "gp2", SizeGiB: 100, IOPS: 300})
	if _, ok := gp2[TagShapeIOPS]; ok {
		t.Errorf("gp2 IOPS recorded (%v): CreateVolume refuses Iops for gp2", gp2)
	}
	if _, ok := ShapeTags(Volume{VolumeType: "gp3", KMSKeyID: "k"})[TagShapeKMSKey]; ok {
		t.Errorf("the key of an unencrypted volume recorded")
	}
}

// TestRestoreShape: a restore takes the larger of the recorded and the configured values, the recorded
// type unless --type was given, and never less encryption than the snapshot has; each difference from the
// configuration is a note.
func TestRestoreShape(t *testing.T) {
	t.Parallel()
	def := VolumeShape{SizeGiB: 10, Type: "gp3"}
	snapOf := func(rec RecordedShape) Snapshot {
		return Snapshot{ID: "snap-1", VolumeSizeGiB: int32(max(rec.SizeGiB, 1)), Shape: rec}
	}
	tests := []struct {
		name      string
		cfg       VolumeShape
		snap      Snapshot
		want      VolumeShape
		wantNotes []string // each in some note
		noNotes   bool
	}{
		{name: "modified to 6000 IOPS / 500 MiB/s comes back so", cfg: def,
			snap: snapOf(RecordedShape{Type: "gp3", SizeGiB: 10, IOPS: 6000, Throughput: 500}),
			want: VolumeShape{SizeGiB: 10, Type: "gp3", IOPS: 6000, Throughput: 500}, wantNotes: []string{"6000 IOPS, recorded on snap-1", "500 MiB/s, recorded on snap-1"}},
		{name: "the configuration is larger", cfg: VolumeShape{SizeGiB: 10, Type: "gp3", IOPS: 8000, Throughput: 600},
			snap: snapOf(RecordedShape{Type: "gp3", SizeGiB: 10, IOPS: 6000, Throughput: 500}),
			want: VolumeShape{SizeGiB: 10, Type: "gp3", IOPS: 8000, Throughput: 600}, wantNotes: []string{"8000 IOPS as configured", "600 MiB/s as configured"}},
		{name: "grown with ModifyVolume: the recorded size", cfg: def, snap: snapOf(RecordedShape{Type: "gp3", SizeGiB: 50}),
			want: VolumeShape{SizeGiB: 50, Type: "gp3"}, wantNotes: []string{"50 GiB"}},
		{name: "recorded io2 without --type: io2 with its IOPS", cfg: def, snap: snapOf(RecordedShape{Type: "io2", SizeGiB: 10, IOPS: 20000}),
			want: VolumeShape{SizeGiB: 10, Type: "io2", IOPS: 20000}, wantNotes: []string{"type io2, recorded", "20000 IOPS"}},
		{name: "explicit --type wins; the other type's IOPS do not follow", cfg: VolumeShape{SizeGiB: 10, Type: "gp3", TypeSet: true},
			snap: snapOf(RecordedShape{Type: "io2", SizeGiB: 10, IOPS: 20000}),
			want: VolumeShape{SizeGiB: 10, Type: "gp3", TypeSet: true}, wantNotes: []string{"type gp3 as configured; the snapshot's volume was io2"}},
		{name: "recorded gp2: no IOPS or throughput sent", cfg: VolumeShape{SizeGiB: 10, Type: "gp3", IOPS: 4000, Throughput: 200},
			snap: snapOf(RecordedShape{Type: "gp2", SizeGiB: 10}),
			want: VolumeShape{SizeGiB: 10, Type: "gp2"}, wantNotes: []string{"type gp2"}},
		{name: "an old snapshot without shape tags: the configuration", cfg: VolumeShape{SizeGiB: 10, Type: "gp3", IOPS: 4000},
			snap: Snapshot{ID: "snap-old", VolumeSizeGiB: 8}, want: VolumeShape{SizeGiB: 10, Type: "gp3", IOPS: 4000}, noNotes: true},
		{name: "the same shape: no note", cfg: def, snap: snapOf(RecordedShape{Type: "gp3", SizeGiB: 10}), want: def, noNotes: true},
		{name: "encrypted snapshot, no --encrypted: encrypted with its key", cfg: def,
			snap: Snapshot{ID: "snap-e", VolumeSizeGiB: 10, Encrypted: true, KMSKeyID: "key-a"},
			want: VolumeShape{SizeGiB: 10, Type: "gp3", Encrypted: true}, wantNotes: []string{"with its key key-a"}},
		{name: "encrypted snapshot, another --kms-key-id: re-encrypted, said", cfg: VolumeShape{SizeGiB: 10, Type: "gp3", Encrypted: true, KMSKeyID: "key-b"},
			snap: Snapshot{ID: "snap-e", VolumeSizeGiB: 10, Encrypted: true, KMSKeyID: "key-a"},
			want: VolumeShape{SizeGiB: 10, Type: "gp3", Encrypted: true, KMSKeyID: "key-b"}, wantNotes: []string{"--kms-key-id key-b", "the snapshot's key is key-a"}},
		{name: "unencrypted snapshot, --encrypted: encrypted on restore", cfg: VolumeShape{SizeGiB: 10, Type: "gp3", Encrypted: true},
			snap: Snapshot{ID: "snap-u", VolumeSizeGiB: 10}, want: VolumeShape{SizeGiB: 10, Type: "gp3", Encrypted: true}, wantNotes: []string{"encrypted on restore"}},
		{name: "the rate is kept", cfg: VolumeShape{SizeGiB: 10, Type: "gp3", InitializationRate: 300}, snap: snapOf(RecordedShape{Type: "gp3", SizeGiB: 10}),
			want: VolumeShape{SizeGiB: 10, Type: "gp3", InitializationRate: 300}, noNotes: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, notes := RestoreShape(tt.cfg, tt.snap)
			if got != tt.want {
				t.Errorf("shape %+v, want %+v", got, tt.want)
			}
			all := strings.Join(notes, " | ")
			for _, w := range tt.wantNotes {
				if !strings.Contains(all, w) {
					t.Errorf("notes lack %q: %s", w, all)
				}
			}
			if tt.noNotes && len(notes) > 0 {
				t.Errorf("notes %q, want none", all)
			}
		})
	}
}

// TestCreateVolumeInputRate: the initialization rate goes into CreateVolume for a restore only.
func TestCreateVolumeInputRate(t *testing.T) {
	t.Parallel()
	shape := VolumeShape{SizeGiB: 1, Type: "gp3", InitializationRate: 200}
	restore := CreateVolumeInput("g", "data", "us-east-1b", 2, "", shape, &Snapshot{ID: "snap-1", VolumeSizeGiB: 1})
	if restore.VolumeInitializationRate == nil || *restore.VolumeInitializationRate != 200 {
		t.Errorf("restore: VolumeInitializationRate %v, want 200", restore.VolumeInitializationRate)
	}
	if blank := CreateVolumeInput("g", "data", "us-east-1b", 1, "", shape, nil); blank.VolumeInitializationRate != nil {
		t.Errorf("blank: VolumeInitializationRate %d, want none (CreateVolume refuses it)", *blank.VolumeInitializationRate)
	}
}

// TestWithSourceShape: a snapshot without recorded shape (a CreateSnapshots set's) takes its source
// volume's, when the group still has it; a recorded shape, or a source that is gone, is left alone.
func TestWithSourceShape(t *testing.T) {
	src := Volume{ID: "vol-src", SizeGiB: 20, VolumeType: "gp3", IOPS: 6000, Throughput: 500}
	other := Volume{ID: "vol-other", SizeGiB: 5, VolumeType: "gp3", IOPS: 3000, Throughput: 125}
	got := withSourceShape(Snapshot{ID: "snap-1", SourceVolume: "vol-src"}, []Volume{other, src})
	if want := (RecordedShape{Type: "gp3", SizeGiB: 20, IOPS: 6000, Throughput: 500}); got.Shape != want {
		t.Errorf("shape from the source volume: %+v, want %+v", got.Shape, want)
	}
	rec := RecordedShape{Type: "io2", SizeGiB: 8, IOPS: 1000}
	if got := withSourceShape(Snapshot{SourceVolume: "vol-src", Shape: rec}, []Volume{src}); got.Shape != rec {
		t.Errorf("a recorded shape was replaced: %+v", got.Shape)
	}
	if got := withSourceShape(Snapshot{SourceVolume: "vol-gone"}, []Volume{src}); got.Shape != (RecordedShape{}) {
		t.Errorf("a shape from no volume: %+v", got.Shape)
	}
	shape, _ := RestoreShape(VolumeShape{Type: "gp3", SizeGiB: 1, IOPS: 3000, Throughput: 125}, withSourceShape(Snapshot{ID: "snap-1", SourceVolume: "vol-src", VolumeSizeGiB: 20}, []Volume{src}))
	if shape.IOPS != 6000 || shape.Throughput != 500 || shape.SizeGiB != 20 {
		t.Errorf("restore of a set's snapshot: %+v, want 6000 IOPS, 500 MiB/s, 20 GiB", shape)
	}
}
