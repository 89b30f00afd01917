package cloud

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/handover/handover/internal/logkey"
)

// A volume restored from a snapshot has its data at once but not its speed: "the storage blocks from the
// snapshot must be downloaded from Amazon S3 and written to the volume before you can access them ...
// the volume being initialized might experience increased I/O latency and decreased performance. Full
// volume performance is achieved only once all storage blocks have been downloaded"
// (https://docs.aws.amazon.com/ebs/latest/userguide/initalize-volume.html). Two ways to shorten that:
//
//   - an Amazon EBS Provisioned Rate for Volume Initialization (--initialization-rate, 100 to 300 MiB/s):
//     CreateVolume's VolumeInitializationRate, "supported only for volumes created from snapshots"
//     (https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_CreateVolume.html), so a blank volume is
//     made without it (CreateVolume refuses it there);
//   - a snapshot enabled for fast snapshot restore in this AZ: the volume "is fully initialized at
//     creation"; with a rate as well, "the volume will be initialized at the specified rate instead of fast
//     snapshot restore", so handover leaves the rate out for such a snapshot and says so.
//
// DescribeVolumeStatus reports the progress (InitializationStatusDetails: type, percent, and for a
// provisioned rate the estimated seconds left); "It can take up to 5 minutes for the volume
// initialization information to be updated"
// (https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_VolumeStatusItem.html).

// Provisioned Rate for Volume Initialization bounds, MiB/s ("Valid range: 100 - 300 MiB/s").
const (
	MinInitializationRate = 100
	MaxInitializationRate = 300
)

// Initialization is a restored volume's initialization as DescribeVolumeStatus reports it.
type Initialization struct {
	Type     string `json:"type"`     // default, provisioned-rate, volume-copy
	Progress int    `json:"progress"` // percent, 100 when done
	// SecondsLeft is EBS's estimate, for a provisioned rate only; -1 when it gives none.
	SecondsLeft int `json:"estimated_seconds_left"`
}

// Done reports whether the volume has reached full performance.
func (i Initialization) Done() bool { return i.Progress >= 100 }

// String is the initialization as the summary and status show it: "provisioned-rate 42%, about 3m20s
// left" or "done (default)".
func (i Initialization) String() string {
	if i.Done() {
		return "initialized (" + i.Type + ")"
	}
	s := fmt.Sprintf("initializing %d%% (%s)", i.Progress, i.Type)
	if i.SecondsLeft >= 0 {
		s += fmt.Sprintf(", about %s left", (time.Duration(i.SecondsLeft) * time.Second).String())
	}
	return s
}

// DescribeInitialization reads the initialization of each of ids that has one (volumes created from a
// snapshot); a blank volume has none and is left out of the map.
// https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_DescribeVolumeStatus.html
func DescribeInitialization(ctx context.Context, c EC2, ids []string) (map[string]Initialization, error) {
	out := map[string]Initialization{}
	if len(ids) == 0 {
		return out, nil
	}
	p := ec2.NewDescribeVolumeStatusPaginator(c, &ec2.DescribeVolumeStatusInput{VolumeIds: ids})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("describe the status of %s: %w", strings.Join(ids, ", "), err)
		}
		for _, st := range page.VolumeStatuses {
			if d := st.InitializationStatusDetails; d != nil {
				in := Initialization{Type: string(d.InitializationType), Progress: int(aws.ToInt64(d.Progress)), SecondsLeft: -1}
				if d.EstimatedTimeToCompleteInSeconds != nil {
					in.SecondsLeft = int(*d.EstimatedTimeToCompleteInSeconds)
				}
				out[aws.ToString(st.VolumeId)] = in
			}
		}
	}
	return out, nil
}

// FastRestoreEnabled reports whether fast snapshot restore of the snapshot is enabled in az (state
// enabled; optimizing gives only "some performance benefit").
// https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_DescribeFastSnapshotRestores.html
func FastRestoreEnabled(ctx context.Context, c EC2, snapshotID, az string) (bool, error) {
	out, err := c.DescribeFastSnapshotRestores(ctx, &ec2.DescribeFastSnapshotRestoresInput{Filters: []ec2types.Filter{
		{Name: aws.String("snapshot-id"), Values: []string{snapshotID}},
		{Name: aws.String("availability-zone"), Values: []string{az}},
		{Name: aws.String("state"), Values: []string{string(ec2types.FastSnapshotRestoreStateCodeEnabled)}},
	}})
	if err != nil {
		return false, fmt.Errorf("describe fast snapshot restores of %s in %s: %w", snapshotID, az, err)
	}
	return len(out.FastSnapshotRestores) > 0, nil
}

// fastRestoreLookBound bounds the look for fast snapshot restore before a restore.
const fastRestoreLookBound = 5 * time.Second

// restoreShape is the shape of the slot's volume restored from snap: the recorded shape against the
// configuration (RestoreShape), and the initialization rate unless the snapshot is enabled for fast
// snapshot restore here. Not being able to tell (no permission for DescribeFastSnapshotRestores) is a
// warning: the restore goes on as configured.
func (s *SlotRun) restoreShape(ctx context.Context, snap Snapshot) VolumeShape {
	snap = withSourceShape(snap, s.view.Volumes)
	shape, notes := RestoreShape(s.Shape, snap)
	s.Res.ShapeNotes = notes
	for _, n := range notes {
		s.Log.Info("restore shape: "+n, logkey.Step, "volume", logkey.Snapshot, snap.ID)
	}
	// Bounded on its own: an optional look must not eat the command's --timeout (a region, or an
	// emulator, that does not answer it is retried by the SDK until the deadline).
	fctx, cancel := context.WithTimeout(ctx, fastRestoreLookBound)
	fast, err := FastRestoreEnabled(fctx, s.C.EC2, snap.ID, s.Az)
	cancel()
	if err != nil {
		s.Log.Warn("could not tell whether the snapshot is enabled for fast snapshot restore here; restoring as configured", logkey.Step, "volume",
			logkey.Snapshot, snap.ID, logkey.Error, err.Error())
	}
	s.Res.FastRestore = fast
	switch {
	case fast:
		// A rate would replace fast snapshot restore with the (slower) rate.
		shape.InitializationRate = 0
		s.Log.Info("snapshot enabled for fast snapshot restore here: the volume is fully initialized at creation", logkey.Step, "volume",
			logkey.Snapshot, snap.ID, logkey.AZ, s.Az)
	case shape.InitializationRate > 0:
		s.Log.Info("restoring with a provisioned initialization rate", logkey.Step, "volume", logkey.Snapshot, snap.ID, "rate_mib_s", shape.InitializationRate)
	}
	s.Res.InitializationRate = shape.InitializationRate
	return shape
}
