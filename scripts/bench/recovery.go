package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/handover/handover/cloud"
	"github.com/handover/handover/sim"
)

// One recovery: the replacement instance runs the peer (handover up, or the AWS CLI user data) once, in a
// world where the group's data waits for it:
//
//	cross-az: the newest volume (generation 1) is detached in us-east-1a, its final snapshot completed
//	          (taken by `handover down`), the old instance terminated; the replacement runs in us-east-1b.
//	          Critical path: the restore (CreateVolume from the snapshot: creating -> available), then the
//	          attach (attaching -> attached).
//	same-az:  the same, with the replacement in us-east-1a: the volume is reattached. Critical path: the
//	          attach.
//
// The limit of a run is the sum of the transitions on that critical path as the simulator recorded them in
// that run (sim.Region.Transitions: jitter included), not the configured delays: what the cloud allowed
// this time if every API call took no time and every change were seen the instant it happened.

type recoveryKind string

const (
	crossAZ recoveryKind = "cross-az"
	sameAZ  recoveryKind = "same-az"
	// pendingAZ is crossAZ with the final snapshot still pending when up starts (a planned hand-over whose
	// replacement booted before the snapshot completed): up waits for it, then restores. The harness takes
	// that snapshot of the old volume at the start of the measured run (pendingSnapshot), 10 s long.
	pendingAZ recoveryKind = "cross-az-pending"
)

// pendingSnapshot is the final snapshot's time in the pendingAZ runs.
const pendingSnapshot = 10 * time.Second

// Peers.
const (
	peerHandover  = "handover"
	peerCLIWaiter = "cli-waiter" // awscli-user-data.sh --wait waiter
	peerCLIPoll   = "cli-poll"   // awscli-user-data.sh --wait poll
)

const group = "orders"

// recoveryWorld is a built world, ready for one measured run.
type recoveryWorld struct {
	kind   recoveryKind
	dir    string // scratch root: sim state, mounts, locks
	alloc  string
	old    string
	repl   string
	digest [32]byte
}

func (w *recoveryWorld) stateDir() string { return filepath.Join(w.dir, "sim") }

// buildRecovery builds the world of kind in dir at setupSpeed: the first instance's `handover up` (blank
// volume, mkfs, mount), data written, its `handover down --release unmount --wait-snapshot` (final
// consistent snapshot, detach), the instance terminated, the replacement launched and running.
func buildRecovery(ctx context.Context, b *bench, kind recoveryKind, dir string) (*recoveryWorld, error) {
	w := &recoveryWorld{kind: kind, dir: dir}
	g, err := openRegion(w.stateDir(), sim.Options{Speed: setupSpeed, Seed: 1})
	if err != nil {
		return nil, err
	}
	defer func() { _ = g.close() }()
	if w.alloc, err = g.allocateAddress(ctx, group); err != nil {
		return nil, err
	}
	if w.old, err = g.runInstance(ctx, "us-east-1a", group); err != nil {
		return nil, err
	}
	if err := g.waitState(ctx, w.old, "running"); err != nil {
		return nil, err
	}
	env, err := g.instanceEnv(w.old, dir)
	if err != nil {
		return nil, err
	}
	if p := run(ctx, env, upArgs(b.handover, dir, w.old)...); p.Code != 0 {
		return nil, fmt.Errorf("setup: first boot's up exited %d:\n%s", p.Code, p.Stderr)
	}
	if w.digest, err = writeData(mountPoint(dir, w.old), "orders.db", 1<<20); err != nil {
		return nil, err
	}
	down := []string{b.handover, "down", "--volume", "data:/dev/sdf:" + mountPoint(dir, w.old), "--release", "unmount", "--wait-snapshot"}
	if p := run(ctx, env, down...); p.Code != 0 {
		return nil, fmt.Errorf("setup: down exited %d:\n%s", p.Code, p.Stderr)
	}
	if err := g.terminate(ctx, w.old); err != nil {
		return nil, err
	}
	if err := g.waitState(ctx, w.old, "terminated"); err != nil {
		return nil, err
	}
	az := "us-east-1b"
	if kind == sameAZ {
		az = "us-east-1a"
	}
	if w.repl, err = g.runInstance(ctx, az, group); err != nil {
		return nil, err
	}
	if err := g.waitState(ctx, w.repl, "running"); err != nil {
		return nil, err
	}
	return w, g.idle(ctx)
}

// measuredOptions are the region's options for the measured run: AWS-like delays (Speed 1), jitter, the
// API latency, and a seed per round so that every peer of a round draws the same transition times.
func measuredOptions(jitter float64, latency time.Duration, seed int64) sim.Options {
	return sim.Options{Speed: 1, Jitter: jitter, Seed: seed, Faults: sim.Faults{Latency: latency}}
}

// recoveryRun is what one measured run gave.
type recoveryRun struct {
	Kind      recoveryKind   `json:"kind"`
	Peer      string         `json:"peer"`
	Latency   time.Duration  `json:"latency"`
	Round     int            `json:"round"`
	Wall      time.Duration  `json:"wall"`
	Limit     time.Duration  `json:"limit"`
	Calls     int            `json:"calls"`
	Mutating  int            `json:"mutating"`
	Throttled int            `json:"throttled"`
	ByAction  map[string]int `json:"by_action"`
	MaxRSSKB  int64          `json:"max_rss_kb"`
	// FirstCreate is when CreateVolume reached the region, from exec (cross-az only).
	FirstCreate time.Duration `json:"first_create,omitempty"`
	Stderr      string        `json:"-"`
}

func (r recoveryRun) ratio() float64 { return r.Wall.Seconds() / r.Limit.Seconds() }

// measureRecovery opens w's region with o, runs peer as the replacement and checks the outcome: exit 0,
// the data byte for byte at the replacement's mount point, the address on the replacement.
func measureRecovery(ctx context.Context, b *bench, w *recoveryWorld, peer string, o sim.Options) (recoveryRun, error) {
	res := recoveryRun{Kind: w.kind, Peer: peer, Latency: o.Faults.Latency}
	g, err := openRegion(w.stateDir(), o)
	if err != nil {
		return res, err
	}
	defer func() {
		unmountUnder(w.dir)
		_ = g.close()
	}()
	env, err := g.instanceEnv(w.repl, w.dir)
	if err != nil {
		return res, err
	}
	if w.kind == pendingAZ {
		if err := takeFinalSnapshot(ctx, g, w.old); err != nil {
			return res, err
		}
	}
	var argv []string
	switch peer {
	case peerHandover:
		argv = upArgs(b.handover, w.dir, w.repl)
	case peerCLIWaiter, peerCLIPoll:
		env["MOUNT_POINT"] = mountPoint(w.dir, w.repl)
		env["SIZE_GIB"] = "1"
		mode := "waiter"
		if peer == peerCLIPoll {
			mode = "poll"
		}
		argv = []string{"bash", b.script, "--wait", mode}
	default:
		return res, fmt.Errorf("unknown peer %q", peer)
	}
	p := run(ctx, env, argv...)
	res.Wall, res.MaxRSSKB, res.Stderr = p.Wall, p.MaxRSSKB, p.Stderr
	if p.Code != 0 {
		return res, fmt.Errorf("%s on %s exited %d:\n%s\n%s", peer, w.repl, p.Code, p.Stdout, p.Stderr)
	}
	key := env["AWS_ACCESS_KEY_ID"]
	res.ByAction = map[string]int{}
	for _, c := range g.r.Calls() {
		if c.Caller != key {
			continue
		}
		res.Calls++
		res.ByAction[c.Action]++
		if c.Mutating {
			res.Mutating++
		}
		if c.Code == "RequestLimitExceeded" || c.Code == "Throttling" {
			res.Throttled++
		}
		if c.Action == "CreateVolume" && res.FirstCreate == 0 {
			res.FirstCreate = c.Time.Sub(p.Start)
		}
	}
	res.Limit = criticalPath(g.r.Transitions(), w.kind)
	if res.Limit <= 0 {
		return res, fmt.Errorf("%s: no transitions recorded on the critical path: %+v", peer, g.r.Transitions())
	}
	got, err := readDigest(filepath.Join(mountPoint(w.dir, w.repl), "orders.db"))
	if err != nil || got != w.digest {
		return res, fmt.Errorf("%s: the data on %s is not the data written (err %v)", peer, w.repl, err)
	}
	if h, err := g.addressHolder(ctx, w.alloc); err != nil || h != w.repl {
		return res, fmt.Errorf("%s: the address is on %q, not on the replacement %s (err %v)", peer, h, w.repl, err)
	}
	return res, nil
}

// criticalPath sums the recorded transitions a recovery of kind has to wait for: every volume creation
// (a restore) and every attachment of the measured run (the world's setup ran in another region).
func criticalPath(recs []sim.TransitionRecord, kind recoveryKind) time.Duration {
	var sum time.Duration
	for _, t := range recs {
		switch {
		case t.Kind == sim.VolumeCreate && kind != sameAZ, t.Kind == sim.VolumeAttach,
			t.Kind == sim.SnapshotComplete && kind == pendingAZ:
			sum += t.Took()
		}
	}
	return sum
}

// recoveryConfig is one table: a kind of recovery at one API latency, the peers measured alternately.
type recoveryConfig struct {
	Kind    recoveryKind
	Latency time.Duration
	Peers   []string
}

// runRecoveries measures cfg for rounds rounds. Round i runs the peers in an order rotated by i, each in a
// fresh world and with the same seed (so the same jitter draws), so that no peer always goes first on a
// machine that other work shares, and the ratios between peers are paired.
func runRecoveries(ctx context.Context, b *bench, cfg recoveryConfig, rounds int) ([]recoveryRun, error) {
	var out []recoveryRun
	for i := 0; i < rounds; i++ {
		seed := int64(1000 + i)
		for j := range cfg.Peers {
			peer := cfg.Peers[(i+j)%len(cfg.Peers)]
			dir, err := os.MkdirTemp(b.work, string(cfg.Kind)+"-"+peer+"-")
			if err != nil {
				return out, err
			}
			w, err := buildRecovery(ctx, b, cfg.Kind, dir)
			if err != nil {
				unmountUnder(dir)
				return out, fmt.Errorf("build %s world: %w", cfg.Kind, err)
			}
			o := measuredOptions(b.jitter, cfg.Latency, seed)
			if cfg.Kind == pendingAZ {
				o.Delays.Snapshot = pendingSnapshot
				// The harness's own snapshot follows the world's setup snapshot of that volume by less than
				// EBS's per-volume interval: waiting it out would only lengthen the run (up takes none).
				o.SnapshotInterval = -1
			}
			res, err := measureRecovery(ctx, b, w, peer, o)
			res.Round = i
			if err != nil {
				return out, err
			}
			b.logf("%s %s latency %s round %d: %s (limit %s, x%.3f), %d calls (%d mutating), %d KiB",
				cfg.Kind, peer, cfg.Latency, i, res.Wall.Round(time.Millisecond), res.Limit.Round(time.Millisecond), res.ratio(),
				res.Calls, res.Mutating, res.MaxRSSKB)
			if peer == peerHandover {
				b.checkProgress(peer, res.Stderr)
			}
			b.saveLog(fmt.Sprintf("%s-%dms-%s-%d.log", cfg.Kind, cfg.Latency.Milliseconds(), peer, i), res.Stderr)
			out = append(out, res)
			_ = os.RemoveAll(dir)
		}
	}
	return out, nil
}

// actionSummary lists calls by action, most first: "DescribeVolumes 12, DescribeAddresses 4, ...".
func actionSummary(m map[string]int) string {
	type kv struct {
		k string
		v int
	}
	var xs []kv
	for k, v := range m {
		xs = append(xs, kv{k, v})
	}
	for i := range xs {
		for j := i + 1; j < len(xs); j++ {
			if xs[j].v > xs[i].v || (xs[j].v == xs[i].v && xs[j].k < xs[i].k) {
				xs[i], xs[j] = xs[j], xs[i]
			}
		}
	}
	parts := make([]string, len(xs))
	for i, x := range xs {
		parts[i] = fmt.Sprintf("%s %d", x.k, x.v)
	}
	return strings.Join(parts, ", ")
}

// takeFinalSnapshot snapshots the old instance's volume (detached in us-east-1a) as down does, a final
// consistent one of its generation, so that the replacement finds it pending.
func takeFinalSnapshot(ctx context.Context, g *region, old string) error {
	vols, err := cloud.ListSlotVolumes(ctx, g.ec2, group, "data")
	if err != nil || len(vols) == 0 {
		return fmt.Errorf("the old volume: %d found, %v", len(vols), err)
	}
	_, err = cloud.CreateSnapshot(ctx, g.ec2, cloud.SnapshotRequest{Group: group, Slot: "data", Volume: vols[0], InstanceID: old,
		Consistent: true, Final: true, Description: "bench: the final snapshot, pending when the replacement boots"})
	return err
}
