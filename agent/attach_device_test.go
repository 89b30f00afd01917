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
// ways. Device first: the attach wait ends on the device while the API still reads attaching. Device
// last: the wait ends on the API and up waits for the device before it mounts. Either way the API is
// asked about once a second meanwhile (not every 250 ms), and the volume is mounted.
func TestUpAttachEndsOnTheDeviceOrTheAPI(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	// Attach takes 2 s here (200 s at the tests' speed 100), so that the two orders are seconds apart.
	for _, tc := range []struct {
		name     string
		lag      time.Duration
		byDevice bool
	}{
		{"device first", -180 * time.Second, true},
		{"device last", 50 * time.Second, false},
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
			ended := strings.Contains(res.stderr, "its block device is on this host")
			if ended != tc.byDevice {
				t.Errorf("the attach wait ended on the device: %v, want %v\n%s", ended, tc.byDevice, res.stderr)
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
			if tc.byDevice && polls > 4 {
				t.Errorf("%d DescribeVolumes calls after AttachVolume while the device was there first, want at most 4 (one a second, and the listing after)", polls)
			}
			if !tc.byDevice && (polls < 3 || polls > 5) {
				t.Errorf("%d DescribeVolumes calls after AttachVolume, want 3 to 5 (about once a second for the 2 s the API reads attaching, and the listing after)", polls)
			}
		})
	}
}
