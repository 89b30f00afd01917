package cloud

import (
	"fmt"
	"strconv"
)

// A volume keeps its shape across a move. Without this, type, IOPS and throughput came from the
// configuration on every restore, so a volume an operator had raised with ModifyVolume
// (https://docs.aws.amazon.com/ebs/latest/userguide/ebs-modify-volume.html) fell back at the next move
// across AZs. Every snapshot handover takes records its source volume's shape in tags set at creation
// (TagShape*), and a restore takes the larger of the recorded and the configured values:
//
//   - size: the largest of --size, the snapshot's size and the recorded size (grow only);
//   - type: the recorded type, unless --type was given (flag, environment or tag): types are not ordered,
//     so an explicit choice is the operator's, and the default (gp3) is not a choice;
//   - IOPS and throughput: the larger of the configured and the recorded value, when the volume keeps
//     the recorded type and that type takes them (IOPS: gp3, io1, io2; throughput: gp3); with another type,
//     the configured values alone (a gp2 volume's io2 IOPS would make CreateVolume fail);
//   - encryption: an encrypted snapshot always restores encrypted (EBS enforces it), with the snapshot's
//     own key unless --kms-key-id names another, which EBS then re-encrypts with
//     (https://docs.aws.amazon.com/ebs/latest/userguide/ebs-encryption.html); an unencrypted snapshot
//     restores encrypted only with --encrypted. Nothing here ever turns encryption off.
//
// A snapshot without the shape tags (taken by hand, or by an older handover) restores with the
// configuration, at least the snapshot's size, as before.

// RecordedShape is the shape a snapshot's tags recorded of its source volume; zero fields were not
// recorded.
type RecordedShape struct {
	Type       string
	SizeGiB    int
	IOPS       int
	Throughput int
	KMSKeyID   string
}

// ShapeTags are the tags that record v's shape on a snapshot of it.
func ShapeTags(v Volume) map[string]string {
	t := map[string]string{}
	if v.VolumeType != "" {
		t[TagShapeType] = v.VolumeType
	}
	if v.SizeGiB > 0 {
		t[TagShapeSize] = strconv.Itoa(int(v.SizeGiB))
	}
	if v.IOPS > 0 && takesIOPS(v.VolumeType) {
		t[TagShapeIOPS] = strconv.Itoa(int(v.IOPS))
	}
	if v.Throughput > 0 && takesThroughput(v.VolumeType) {
		t[TagShapeThroughput] = strconv.Itoa(int(v.Throughput))
	}
	if v.Encrypted && v.KMSKeyID != "" {
		t[TagShapeKMSKey] = v.KMSKeyID
	}
	return t
}

func recordedShapeOf(tags map[string]string) RecordedShape {
	n := func(k string) int {
		v, err := strconv.Atoi(tags[k])
		if err != nil || v < 0 {
			return 0
		}
		return v
	}
	return RecordedShape{Type: tags[TagShapeType], SizeGiB: n(TagShapeSize), IOPS: n(TagShapeIOPS), Throughput: n(TagShapeThroughput), KMSKeyID: tags[TagShapeKMSKey]}
}

// takesIOPS and takesThroughput: the types whose CreateVolume takes Iops and Throughput.
// https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_CreateVolume.html
func takesIOPS(t string) bool       { return t == "gp3" || t == "io1" || t == "io2" }
func takesThroughput(t string) bool { return t == "gp3" }

// RestoreShape is the shape of a volume restored from snap with the configuration cfg (the rules above),
// and one note for each way it differs from cfg, for the summary.
func RestoreShape(cfg VolumeShape, snap Snapshot) (VolumeShape, []string) {
	rec := snap.Shape
	out := cfg
	var notes []string
	note := func(format string, args ...any) { notes = append(notes, fmt.Sprintf(format, args...)) }

	out.SizeGiB = max(cfg.SizeGiB, int(snap.VolumeSizeGiB), rec.SizeGiB)
	if out.SizeGiB > cfg.SizeGiB {
		note("%d GiB: the size of the snapshot's volume (--size %d)", out.SizeGiB, cfg.SizeGiB)
	}
	switch {
	case rec.Type == "" || rec.Type == cfg.Type:
	case cfg.TypeSet:
		note("type %s as configured; the snapshot's volume was %s", cfg.Type, rec.Type)
	default:
		out.Type = rec.Type
		note("type %s, recorded on %s (--type not given; the default is %s)", rec.Type, snap.ID, cfg.Type)
	}
	sameType := rec.Type == out.Type
	out.IOPS, out.Throughput = 0, 0
	if takesIOPS(out.Type) {
		out.IOPS = cfg.IOPS
		if sameType && rec.IOPS > cfg.IOPS {
			out.IOPS = rec.IOPS
			note("%d IOPS, recorded on %s (--iops %s)", rec.IOPS, snap.ID, orDefault(cfg.IOPS))
		} else if sameType && rec.IOPS > 0 && rec.IOPS < cfg.IOPS {
			note("%d IOPS as configured; the snapshot's volume had %d", cfg.IOPS, rec.IOPS)
		}
	}
	if takesThroughput(out.Type) {
		out.Throughput = cfg.Throughput
		if sameType && rec.Throughput > cfg.Throughput {
			out.Throughput = rec.Throughput
			note("%d MiB/s, recorded on %s (--throughput %s)", rec.Throughput, snap.ID, orDefault(cfg.Throughput))
		} else if sameType && rec.Throughput > 0 && rec.Throughput < cfg.Throughput {
			note("%d MiB/s as configured; the snapshot's volume had %d", cfg.Throughput, rec.Throughput)
		}
	}
	snapKey := FirstNonEmpty(snap.KMSKeyID, rec.KMSKeyID)
	switch {
	case snap.Encrypted && cfg.KMSKeyID != "" && snapKey != "" && cfg.KMSKeyID != snapKey:
		out.Encrypted = true
		note("encrypted with --kms-key-id %s (EBS re-encrypts; the snapshot's key is %s)", cfg.KMSKeyID, snapKey)
	case snap.Encrypted:
		out.Encrypted = true
		if !cfg.Encrypted {
			note("encrypted like the snapshot, with its key %s (--encrypted not given)", FirstNonEmpty(snapKey, "(the snapshot's)"))
		}
	case cfg.Encrypted:
		note("encrypted on restore (--encrypted): the snapshot %s is not", snap.ID)
	}
	return out, notes
}

func orDefault(n int) string {
	if n == 0 {
		return "not given: the type's default"
	}
	return strconv.Itoa(n)
}

// withSourceShape gives a snapshot that records no shape (one of a CreateSnapshots set, which can only
// copy each volume's tags and so cannot carry a per-volume shape; or one taken before shapes were
// recorded) the shape of its source volume when the group still has that volume: retention never deletes
// the newest completed snapshot's source (SlotRun.Retire), so a move finds it, and its shape now is the
// one ModifyVolume left it with.
func withSourceShape(snap Snapshot, vols []Volume) Snapshot {
	if snap.Shape != (RecordedShape{}) || snap.SourceVolume == "" {
		return snap
	}
	for _, v := range vols {
		if v.ID == snap.SourceVolume {
			snap.Shape = recordedShapeOf(ShapeTags(v))
			return snap
		}
	}
	return snap
}
