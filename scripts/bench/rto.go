package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/handover/handover/sim"
)

// The RTO/RPO model. What the simulator measured in this run (up's part: the restore, the attach and
// handover's own overhead) goes in as measured; what it cannot run here in minutes (a 30 min snapshot,
// an instance's boot, an AZ outage) goes in as the model's inputs, and every cell says which it is.

// rtoInputs are the model's terms, in seconds.
type rtoInputs struct {
	boot     float64 // boot to user data, from the hook's completion (or the loss) to `handover up` starting
	detach   float64 // down's detach (the snapshot is point-in-time: down does not wait for it)
	upCross  float64 // up, cross-AZ: restore + attach + handover's overhead (measured)
	upSame   float64 // up, same AZ: attach + overhead (measured)
	measured bool    // upCross and upSame are this run's medians, not the simulator's defaults
}

func (b *bench) rtoSection(ctx context.Context) error {
	in := rtoInputs{boot: 30, detach: sim.DefaultDelays.Detach.Seconds(),
		upCross: (sim.DefaultDelays.CreateVolumeFromSnapshot + sim.DefaultDelays.Attach).Seconds(),
		upSame:  sim.DefaultDelays.Attach.Seconds()}
	if b.recovered == nil && b.out != "" {
		// A run of this section alone takes the recovery figures an earlier run saved into -out.
		if data, err := os.ReadFile(filepath.Join(b.out, "recovery.json")); err == nil {
			_ = json.Unmarshal(data, &b.recovered)
		}
	}
	if r := medianRun(b.recovered["cross-az-0ms"], peerHandover); r.Peer != "" {
		in.upCross, in.measured = r.Wall.Seconds(), true
		if s := medianRun(b.recovered["same-az-0ms"], peerHandover); s.Peer != "" {
			in.upSame = s.Wall.Seconds()
		}
	}
	src := "this run's medians (the recovery tables above, 0 ms latency)"
	if !in.measured {
		src = "the simulator's default delays (the recovery section did not run: no measurement)"
	}
	b.printf("\n## RTO and RPO: a model, with a sensitivity table\n")
	b.printf("\nTerms (seconds): boot B = %.0f (boot to user data, counted from the hook's completion or the loss; an input, not measured); detach D = %.0f (the simulator's default); up across AZs U = %.2f and up in the same AZ U' = %.2f, from %s; the final snapshot's time S per row. Detection of an abrupt loss (status checks, the group's health check) comes on top of every abrupt row and is not in the table.\n",
		in.boot, in.detach, in.upCross, in.upSame, src)
	b.printf("\n- planned hand-over (termination hook): RTO = D + B + max(0, S − B) + U (down does not wait for its snapshot: it completes while the replacement boots, and up waits for the rest); RPO = 0 (the service is stopped and the filesystem frozen or unmounted before the snapshot).\n")
	b.printf("- abrupt loss, the old volume reachable (the instance died, its AZ did not): up snapshots the orphaned volume first: RTO = B + S + U; RPO = 0 for every write that reached EBS (crash-consistent: what the dead instance had not flushed is lost, as in any crash).\n")
	b.printf("- abrupt loss of the AZ (the old volume unreachable): RTO = B + U when EBS refuses the orphan's snapshot at once; add `--release-timeout` when the old instance still reads as running or leaving (the replacement waits that long for it), and up to 15 min when EBS accepts the snapshot and never completes it (orphanBound; then up restores the newest older snapshot and logs DATA LOSS). The table shows the two ends: B + U, and B + 15 min + U. RPO = the time since the last completed snapshot: at most I + S with the periodic timer every I, unbounded without it.\n")
	b.printf("\n| S | planned RTO | planned RPO | instance lost: RTO | RPO | AZ lost: RTO | RPO, no timer | RPO, timer every 5 min | every 15 min | every 1 h |\n|---|---|---|---|---|---|---|---|---|---|\n")
	for _, s := range []time.Duration{10 * time.Second, time.Minute, 5 * time.Minute, 30 * time.Minute} {
		S := s.Seconds()
		planned := in.detach + in.boot + max(0, S-in.boot) + in.upCross
		lost := in.boot + S + in.upCross
		az := in.boot + in.upCross
		b.printf("| %s | %s | 0 | %s | 0 | %s – %s | unbounded | %s | %s | %s |\n", short(s), dur(planned), dur(lost), dur(az), dur(az+15*60),
			dur(5*60+S), dur(15*60+S), dur(3600+S))
	}
	b.printf("\nSame-AZ replacement (the volume reattached, no snapshot on the path): planned RTO = D + B + U' = %s, RPO 0; instance lost: B + U' = %s, RPO 0.\n",
		dur(in.detach+in.boot+in.upSame), dur(in.boot+in.upSame))
	if r := medianRun(b.recovered["cross-az-pending-0ms"], peerHandover); r.Peer != "" && in.measured {
		b.printf("\nThe model checked against a run: the replacement starting the moment the final snapshot (S = %s) began (B = 0) is, by the model, S + U = %.2f s; measured (the cross-az-pending table, median): %.2f s.\n",
			pendingSnapshot, pendingSnapshot.Seconds()+in.upCross, r.Wall.Seconds())
	}
	b.printf("\nMeasured: U and U' (when the recovery section ran). Computed: every cell, from the terms above. What an SRE changes: S (snapshot size and churn: incremental snapshots of a busy volume take longer), I (the timer's interval; each snapshot is incremental, so a shorter interval also shortens S), B (AMI and boot).\n")
	return nil
}

func short(d time.Duration) string {
	if d < time.Minute {
		return fmt.Sprintf("%.0f s", d.Seconds())
	}
	return fmt.Sprintf("%.0f min", d.Minutes())
}

// dur prints seconds as s, or min and s past two minutes.
func dur(sec float64) string {
	if sec < 120 {
		return fmt.Sprintf("%.1f s", sec)
	}
	m := int(sec) / 60
	return fmt.Sprintf("%d min %02d s", m, int(sec)-60*m)
}
