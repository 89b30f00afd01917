package agent

import (
	"os"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/handover/handover/internal/fail"
	"github.com/handover/handover/sim"
)

// BenchmarkUpCrossAZRecovery measures `handover up` recovering a volume into another AZ against the
// simulator at its default delays (Speed 1): claim the address, restore the snapshot into a new volume,
// attach it, find the device, mount it. It reports the time next to the sum of the simulator's delays on
// that critical path (CreateVolumeFromSnapshot + Attach); the target is at most that sum plus 1 s.
//
//	go test -run '^$' -bench UpCrossAZRecovery -benchtime 3x ./agent/
//
// Only transitions of the world's setup that up never waits on (the first instance's boot, the blank
// volume, the snapshot) are shortened, to keep each iteration short. Needs root (loop devices, mount).
func BenchmarkUpCrossAZRecovery(b *testing.B) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			b.Fatal("needs root (loop devices, mkfs, mount)")
		}
		b.Skip("needs root (loop devices, mkfs, mount)")
	}
	critical := sim.DefaultDelays.CreateVolumeFromSnapshot + sim.DefaultDelays.Attach
	var total time.Duration
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		w := newTestRegion(b, func(o *sim.Options) {
			o.Speed = 1
			o.Delays = sim.Delays{InstanceStart: 10 * time.Millisecond, CreateVolume: 10 * time.Millisecond, Snapshot: 10 * time.Millisecond,
				InstanceTerminate: 10 * time.Millisecond, Detach: 10 * time.Millisecond}
		})
		w.unmountOnCleanup()
		w.allocateAddress(testGroup)
		old := w.runInstance("us-east-1a", groupTags, true)
		if res := w.runAgent(w.ctx(), old, nil, w.upArgs(old)...); res.code != fail.CodeOK {
			b.Fatalf("first boot: exit %d\n%s", res.code, res.stderr)
		}
		w.writeData(w.mountPoint(old), "orders.db", 1<<20)
		w.unmount(w.mountPoint(old))
		w.snapshot(aws.ToString(w.slotVolumes()[0].VolumeId), 1, true, true)
		w.terminate(old)
		id := w.runInstance("us-east-1b", groupTags, true)

		b.StartTimer()
		start := time.Now()
		res := w.runAgent(w.ctx(), id, nil, w.upArgs(id)...)
		took := time.Since(start)
		b.StopTimer()
		if res.code != fail.CodeOK {
			b.Fatalf("recovery: exit %d\n%s", res.code, res.stderr)
		}
		total += took
		b.Logf("recovery %d: %s (critical path %s, overhead %s)", i, took.Round(time.Millisecond), critical, (took - critical).Round(time.Millisecond))
	}
	mean := total / time.Duration(b.N)
	b.ReportMetric(mean.Seconds(), "s/recovery")
	b.ReportMetric(critical.Seconds(), "s-critical-path")
	b.ReportMetric((mean - critical).Seconds(), "s-overhead")
	if mean > critical+time.Second {
		b.Errorf("mean recovery %s exceeds the critical path %s + 1 s", mean.Round(time.Millisecond), critical)
	}
}
