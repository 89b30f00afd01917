package agent

import (
	"strings"
	"testing"
	"time"

	"github.com/handover/handover/host"
	"github.com/handover/handover/sim"
)

// TestUpAttachEndsOnTheDeviceOrTheAPI: AWS does not document whether an attached volume's NVMe device
// appears before or after DescribeVolumes reads "attached" (sim.Options.DeviceLag), so up is run both
// ways. Device first (0.2 s after AttachVolume): the wait asks the API nothing until the device is there,
// then every 250 ms until it reads attached, so that a down or snapshot run right after up finds the
// volume attached. Device last (6 s after the API reads attached at 2 s): the wait ends on the API, asked
// after 1 s and 2 s more, and up waits for the device before it mounts. Either way the volume is mounted, and
// DescribeVolumes reads it attached here when up ends.
func TestUpAttachEndsOnTheDeviceOrTheAPI(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	// Attach takes 2 s here (200 s at the tests' speed 100); the device comes 1.8 s sooner, or 8 s later.
	for _, tc := range []struct {
		name     string
		lag      time.Duration
		byDevice bool
	}{
		{"device first", -180 * time.Second, true},
		{"device last", 800 * time.Second, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			w := newTestRegion(t, func(o *sim.Options) {
				o.Delays.Attach = 200 * time.Second
				o.DeviceLag = tc.lag
			})
			w.unmountOnCleanup()
			w.allocateAddress(testGroup)
			id := w.runInstance("us-east-1a", groupTags, true)
			w.sim.ResetCalls()
			res := w.runAgent(w.ctx(), id, nil, w.upArgs(id)...)
			mustSucceed(t, res)
			if _, ok, err := host.New("/dev", "/sys").MountedAt(w.mountPoint(id)); err != nil || !ok {
				t.Fatalf("not mounted at %s: %v", w.mountPoint(id), err)
			}
			if v := w.slotVolumes(); len(v) != 1 || len(v[0].Attachments) != 1 || string(v[0].Attachments[0].State) != "attached" {
				t.Errorf("when up ended, DescribeVolumes read %+v: want the one volume attached (down and snapshot look there)", v)
			}
			seen := strings.Contains(res.stderr, "block device is on this host")
			if seen != tc.byDevice {
				t.Errorf("the attach wait saw the device first: %v, want %v\n%s", seen, tc.byDevice, res.stderr)
			}
			// From AttachVolume to the next change (CreateTags: the mark before mkfs), the attach wait and
			// the slot's listing after it: about 2 s.
			polls := 0
			attached := false
			for _, c := range w.sim.Calls() {
				if c.Action == "AttachVolume" {
					attached = true
				}
				if attached && c.Action == "CreateTags" {
					break
				}
				if attached && c.Action == "DescribeVolumes" {
					polls++
				}
			}
			if tc.byDevice && (polls < 5 || polls > 10) {
				t.Errorf("%d DescribeVolumes calls after AttachVolume, want 5 to 10 (none for the 0.2 s before the device, every 250 ms for the 1.8 s after it, and the listing after)", polls)
			}
			if !tc.byDevice && (polls < 2 || polls > 3) {
				t.Errorf("%d DescribeVolumes calls after AttachVolume, want 2 or 3 (the API asked at 1 s and 3 s, and the listing after)", polls)
			}
		})
	}
}
