package sim

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"

	"github.com/handover/handover/sim/simtest"
)

// TestDeviceLag: the block device appears before DescribeVolumes reads attached (negative lag) or after
// it (positive), as Options.DeviceLag says; 0 keeps them together (the other tests).
func TestDeviceLag(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		lag  time.Duration
	}{{"device first", -1500 * time.Second}, {"device last", 1500 * time.Second}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			// Speed 1000: the attach takes 2 s, the lag 1.5 s.
			r := startRegion(t, Options{Delays: Delays{Attach: 2000 * time.Second}, DeviceLag: tc.lag})
			c := ec2Client(r)
			ctx := ctxT(t)
			vol := createVolume(t, r, "us-east-1a", 1, nil)
			inst := runInstance(t, r, "us-east-1a", nil)
			idle(t, r)
			env, err := r.InstanceEnv(inst)
			if err != nil {
				t.Fatal(err)
			}
			link := filepath.Join(env["HANDOVER_DEV_DIR"], "disk", "by-id", nvmeLinkName(vol))
			state := func() string {
				out, err := c.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{VolumeIds: []string{vol}})
				if err != nil || len(out.Volumes) != 1 || len(out.Volumes[0].Attachments) != 1 {
					return "?"
				}
				return string(out.Volumes[0].Attachments[0].State)
			}
			present := func() bool { _, err := os.Lstat(link); return err == nil }
			if _, err := c.AttachVolume(ctx, &ec2.AttachVolumeInput{VolumeId: aws.String(vol), InstanceId: aws.String(inst), Device: aws.String("/dev/sdf")}); err != nil {
				t.Fatal(err)
			}
			if tc.lag < 0 {
				simtest.Eventually(t, 10*time.Second, "the device", func() (bool, string) { return present(), "no device yet" })
				if s := state(); s != "attaching" {
					t.Fatalf("device there, attachment %s: want attaching still", s)
				}
			} else {
				simtest.Eventually(t, 10*time.Second, "attached", func() (bool, string) { s := state(); return s == "attached", s })
				if present() {
					t.Fatal("attached, and the device is there already: want it 1.5 s later")
				}
			}
			simtest.Eventually(t, 10*time.Second, "the device and the attachment", func() (bool, string) { return present() && state() == "attached", state() })
			if !present() || state() != "attached" {
				t.Fatalf("after the lag: device %v, attachment %s; want both", present(), state())
			}
		})
	}
}
