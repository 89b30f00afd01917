package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/handover/handover/cloud"
	"github.com/handover/handover/sim"
)

// Mass recovery: us-east-1a fails and N groups recover at once into us-east-1b and us-east-1c, with EC2's
// documented request token buckets on (sim.Options.Throttle; Auto Scaling's bucket, whose size AWS does
// not publish, is left out: ThrottleEC2Only). Each group's newest volume (generation 1) sits detached in
// us-east-1a with its final snapshot completed, as `down` leaves it; its replacement is running in
// us-east-1b or us-east-1c (alternately) and runs the peer, all N at the same moment, each as its own
// process. The world is built from one golden snapshot (a filesystem and a 1 MiB file) copied per group.

type massWorld struct {
	dir    string
	n      int
	groups []massGroup
	digest [32]byte
}

type massGroup struct {
	name  string
	alloc string
	vol   string
	repl  string
	az    string // the replacement's
}

func (w *massWorld) stateDir() string { return filepath.Join(w.dir, "sim") }

// parallel runs fn(i) for i < n on workers goroutines and returns the first error.
func parallel(n, workers int, fn func(i int) error) error {
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	next := 0
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				i := next
				next++
				stop := first != nil
				mu.Unlock()
				if i >= n || stop {
					return
				}
				if err := fn(i); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	return first
}

func buildMass(ctx context.Context, b *bench, n int, dir string) (*massWorld, error) {
	w := &massWorld{dir: dir, n: n}
	g, err := openRegion(w.stateDir(), sim.Options{Speed: setupSpeed, Seed: 1})
	if err != nil {
		return nil, err
	}
	defer func() { _ = g.close() }()

	// The golden snapshot: handover's own first boot and down, once.
	if _, err := g.allocateAddress(ctx, "golden"); err != nil {
		return nil, err
	}
	golden, err := g.runInstance(ctx, "us-east-1a", "golden")
	if err != nil {
		return nil, err
	}
	if err := g.waitState(ctx, golden, "running"); err != nil {
		return nil, err
	}
	env, err := g.instanceEnv(golden, dir)
	if err != nil {
		return nil, err
	}
	if p := run(ctx, env, upArgs(b.handover, dir, golden)...); p.Code != 0 {
		return nil, fmt.Errorf("setup: golden up exited %d:\n%s", p.Code, p.Stderr)
	}
	if w.digest, err = writeData(mountPoint(dir, golden), "orders.db", 1<<20); err != nil {
		return nil, err
	}
	if p := run(ctx, env, b.handover, "down", "--volume", "data:/dev/sdf:"+mountPoint(dir, golden), "--release", "unmount", "--wait-snapshot"); p.Code != 0 {
		return nil, fmt.Errorf("setup: golden down exited %d:\n%s", p.Code, p.Stderr)
	}
	snaps, err := cloud.ListSlotSnapshots(ctx, g.ec2, "golden", "data")
	if err != nil || len(snaps) != 1 {
		return nil, fmt.Errorf("setup: the golden snapshot: %d found (err %v)", len(snaps), err)
	}
	if err := g.terminate(ctx, golden); err != nil {
		return nil, err
	}

	w.groups = make([]massGroup, n)
	azs := []string{"us-east-1b", "us-east-1c"}
	err = parallel(n, 8, func(i int) error {
		grp := &w.groups[i]
		grp.name = fmt.Sprintf("g%03d", i)
		var err error
		if grp.alloc, err = g.allocateAddress(ctx, grp.name); err != nil {
			return err
		}
		out, err := g.ec2.CreateVolume(ctx, &ec2.CreateVolumeInput{
			AvailabilityZone: aws.String("us-east-1a"), SnapshotId: aws.String(snaps[0].ID), VolumeType: ec2types.VolumeTypeGp3,
			TagSpecifications: cloud.TagSpec(ec2types.ResourceTypeVolume, map[string]string{cloud.TagGroup: grp.name, cloud.TagSlot: "data", cloud.TagGeneration: "1"}),
		})
		if err != nil {
			return fmt.Errorf("CreateVolume for %s: %w", grp.name, err)
		}
		grp.vol = aws.ToString(out.VolumeId)
		grp.az = azs[i%2]
		grp.repl, err = g.runInstance(ctx, grp.az, grp.name)
		return err
	})
	if err != nil {
		return nil, err
	}
	if err := g.idle(ctx); err != nil {
		return nil, err
	}
	// Each volume's final snapshot, tagged as down tags it.
	err = parallel(n, 8, func(i int) error {
		grp := w.groups[i]
		_, err := cloud.CreateSnapshot(ctx, g.ec2, cloud.SnapshotRequest{Group: grp.name, Slot: "data", Volume: cloud.Volume{ID: grp.vol, Generation: 1},
			InstanceID: "i-0ffffffffffffffff", Consistent: true, Final: true, Description: "bench: final snapshot of " + grp.vol})
		return err
	})
	if err != nil {
		return nil, err
	}
	return w, g.idle(ctx)
}

// massRun is one mass recovery of one peer.
type massRun struct {
	Peer      string         `json:"peer"`
	N         int            `json:"n"`
	Round     int            `json:"round"`
	Total     time.Duration  `json:"total"`     // first exec to last exit
	Bound     time.Duration  `json:"bound"`     // the token buckets' least time (tokenBound)
	BoundWhy  string         `json:"bound_why"` // which constraint set it
	Recovered int            `json:"recovered"` // exit 0 with the data and the address
	GaveUp    int            `json:"gave_up"`   // exited non-zero
	Calls     int            `json:"calls"`
	Throttled int            `json:"throttled"`
	ByAction  map[string]int `json:"by_action"`
	Walls     []float64      `json:"walls"` // each group's exec to exit, s
	Failures  []string       `json:"failures,omitempty"`
}

// measureMass opens w's region with throttling on and runs the peer on every replacement at once.
func measureMass(ctx context.Context, b *bench, w *massWorld, peer string, seed int64) (massRun, error) {
	res := massRun{Peer: peer, N: w.n, ByAction: map[string]int{}}
	o := measuredOptions(b.jitter, 0, seed)
	o.Throttle, o.ThrottleEC2Only = true, true
	g, err := openRegion(w.stateDir(), o)
	if err != nil {
		return res, err
	}
	defer func() {
		unmountUnder(w.dir)
		_ = g.close()
	}()
	envs := make([]map[string]string, w.n)
	keys := map[string]bool{}
	for i, grp := range w.groups {
		if envs[i], err = g.instanceEnv(grp.repl, w.dir); err != nil {
			return res, err
		}
		keys[envs[i]["AWS_ACCESS_KEY_ID"]] = true
	}
	procs := make([]proc, w.n)
	model := strings.HasSuffix(peer, "-model")
	if model && b.cliStartup == 0 {
		return res, fmt.Errorf("the CLI's start-up was not measured (massRound measures it first)")
	}
	var wg sync.WaitGroup
	start := time.Now()
	for i, grp := range w.groups {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if !model {
				procs[i] = run(ctx, envs[i], b.peerArgv(peer, w.dir, grp.repl, envs[i])...)
				return
			}
			m := &cliModel{poll: peer == peerCLIPoll+"-model", startup: b.cliStartup, ec2: modelClient(envs[i]),
				rng: rand.New(rand.NewPCG(uint64(seed), uint64(i))), dir: w.dir}
			p := proc{Start: time.Now()}
			if err := m.recover(ctx, grp, grp.az); err != nil {
				p.Code, p.Stderr = 1, err.Error()
			}
			p.Wall = time.Since(p.Start)
			procs[i] = p
		}()
	}
	wg.Wait()
	end := start
	for i, p := range procs {
		if e := p.Start.Add(p.Wall); e.After(end) {
			end = e
		}
		res.Walls = append(res.Walls, p.Wall.Seconds())
		if p.Code != 0 {
			b.saveLog(fmt.Sprintf("mass-%d-%s-%s.log", w.n, peer, w.groups[i].name), p.Stderr)
			res.GaveUp++
			res.Failures = append(res.Failures, fmt.Sprintf("%s: exit %d: %s", w.groups[i].name, p.Code, lastLine(p.Stderr)))
			continue
		}
		got, err := readDigest(filepath.Join(mountPoint(w.dir, w.groups[i].repl), "orders.db"))
		h, herr := g.addressHolder(ctx, w.groups[i].alloc)
		if err != nil || got != w.digest || herr != nil || h != w.groups[i].repl {
			res.Failures = append(res.Failures, fmt.Sprintf("%s: exit 0 but data %v / address on %q (%v)", w.groups[i].name, err, h, herr))
			continue
		}
		res.Recovered++
	}
	res.Total = end.Sub(start)
	for _, c := range g.r.Calls() {
		if !keys[c.Caller] {
			continue
		}
		res.Calls++
		res.ByAction[c.Action]++
		if c.Code == "RequestLimitExceeded" || c.Code == "Throttling" {
			res.Throttled++
		}
	}
	res.Bound, res.BoundWhy = tokenBound(w.n, g.r.Transitions())
	return res, nil
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return oneLine(lines[len(lines)-1])
}

// peerArgv is the command line of peer acting as instance id in a world under dir.
func (b *bench) peerArgv(peer, dir, id string, env map[string]string) []string {
	switch peer {
	case peerCLIWaiter, peerCLIPoll:
		env["MOUNT_POINT"] = mountPoint(dir, id)
		env["SIZE_GIB"] = "1"
		mode := "waiter"
		if peer == peerCLIPoll {
			mode = "poll"
		}
		return []string{"bash", b.script, "--wait", mode}
	}
	return upArgs(b.handover, dir, id)
}

// tokenTime is when the k-th call (1-based) of a burst of calls to one bucket can be made at the earliest:
// the bucket starts full (capacity) and refills continuously.
func tokenTime(k int, capacity, refill float64) time.Duration {
	if float64(k) <= capacity {
		return 0
	}
	return time.Duration((float64(k) - capacity) / refill * float64(time.Second))
}

// tokenBound is the least time in which any client could recover n groups at once given EC2's request
// buckets and the transitions the region recorded in the run: the largest of
//
//   - the slowest group's own restore and attach, back to back (nothing waits for tokens);
//   - the n-th CreateVolume's token, then the shortest restore and the shortest attach recorded;
//   - the n-th AttachVolume's token, then the shortest attach;
//   - the n-th AssociateAddress's token;
//   - the 3n-th filtered DescribeVolumes' token: each group reads its volumes once and must see the restore
//     and the attach end at least once each.
//
// Each is a lower bound for every client (a schedule cannot beat any of them), so their maximum is too;
// a client that spent no call in vain and saw every change at once would finish close to it.
func tokenBound(n int, recs []sim.TransitionRecord) (time.Duration, string) {
	var creates, attaches []time.Duration
	for _, t := range recs {
		switch t.Kind {
		case sim.VolumeCreate:
			creates = append(creates, t.Took())
		case sim.VolumeAttach:
			attaches = append(attaches, t.Took())
		}
	}
	if len(creates) == 0 || len(attaches) == 0 {
		return 0, "no transitions recorded"
	}
	sort.Slice(creates, func(i, j int) bool { return creates[i] < creates[j] })
	sort.Slice(attaches, func(i, j int) bool { return attaches[i] < attaches[j] })
	// The slowest chain: pair them as the region drew them is unknown here, so take the largest restore
	// with the smallest attach, which is still a lower bound for the group that drew that restore.
	chain := creates[len(creates)-1] + attaches[0]
	at := func(action string, filtered bool, k int) time.Duration {
		_, c, r := sim.RequestBucket(action, filtered)
		return tokenTime(k, c, r)
	}
	cands := []struct {
		d   time.Duration
		why string
	}{
		{chain, "the slowest restore and an attach"},
		{at("CreateVolume", false, n) + creates[0] + attaches[0], fmt.Sprintf("the %d-th CreateVolume token, a restore and an attach", n)},
		{at("AttachVolume", false, n) + attaches[0], fmt.Sprintf("the %d-th AttachVolume token and an attach", n)},
		{at("AssociateAddress", false, n), fmt.Sprintf("the %d-th AssociateAddress token", n)},
		{at("DescribeVolumes", true, 3*n), fmt.Sprintf("the %d-th filtered DescribeVolumes token", 3*n)},
	}
	best := cands[0]
	for _, c := range cands[1:] {
		if c.d > best.d {
			best = c
		}
	}
	return best.d, best.why
}

func (b *bench) massSection(ctx context.Context, ns string, rounds int) error {
	b.printf("\n## Mass recovery under EC2's throttling\n")
	b.printf("\nus-east-1a fails; N groups recover at once into us-east-1b and us-east-1c. Each group's replacement runs the peer as its own process (all N started together on this machine), or, for a modelled CLI peer, as a goroutine making the script's calls with its start-up time (climodel.go). The peers of one N run at the same time, each in its own simulated region (its own account and buckets), and the smaller Ns at the same time as each other (the largest alone), so that the section fits the run's 15 minutes; the handover figure is measured under that extra load. EC2's documented request buckets are on (Auto Scaling's, whose size AWS does not publish, is off); jitter %.1f; %d round(s) per N.\n", b.jitter, rounds)
	var counts []int
	for _, f := range strings.Split(ns, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			return fmt.Errorf("bad -mass %q", ns)
		}
		counts = append(counts, n)
	}
	sort.Ints(counts)
	// The CLI's start-up, measured alone before any peer runs (the modelled peers use it).
	for _, p := range b.massPeers {
		if strings.HasSuffix(p, "-model") {
			if err := b.measureCLIStartup(ctx); err != nil {
				return err
			}
			break
		}
	}
	// The largest N runs alone (its figure is the target's); the smaller ones run at the same time as each
	// other, each in its own regions, so that the whole benchmark fits its 15 minutes.
	var all []massRun
	var mu sync.Mutex
	for i := 0; i < rounds; i++ {
		batches := [][]int{counts}
		if len(counts) > 1 {
			batches = [][]int{counts[:len(counts)-1], counts[len(counts)-1:]}
		}
		for _, batch := range batches {
			errs := make([]error, len(batch))
			var wg sync.WaitGroup
			for k, n := range batch {
				wg.Add(1)
				go func() {
					defer wg.Done()
					runs, err := b.massRound(ctx, n, i)
					mu.Lock()
					all = append(all, runs...)
					b.save("mass.json", all)
					mu.Unlock()
					errs[k] = err
				}()
			}
			wg.Wait()
			if err := errors.Join(errs...); err != nil {
				return err
			}
		}
	}
	sort.SliceStable(all, func(i, j int) bool { return all[i].N < all[j].N })
	b.printf("\n| N | peer | all recovered after | token-bucket bound | × bound | recovered | gave up | API calls | RequestLimitExceeded | median group | slowest group |\n|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range all {
		lo, hi := minMax(r.Walls)
		_ = lo
		b.printf("| %d | %s | %.1f s | %.1f s | %.2f | %d/%d | %d | %d | %d | %.1f s | %.1f s |\n", r.N, peerLabel(r.Peer, crossAZ), r.Total.Seconds(), r.Bound.Seconds(),
			r.Total.Seconds()/r.Bound.Seconds(), r.Recovered, r.N, r.GaveUp, r.Calls, r.Throttled, median(r.Walls), hi)
	}
	for _, r := range all {
		b.printf("\nN=%d %s: bound set by %s; calls: %s.", r.N, r.Peer, r.BoundWhy, actionSummary(r.ByAction))
		for _, f := range r.Failures {
			b.printf("\n  - %s", f)
		}
	}
	b.printf("\n")
	return nil
}

// massRound builds one world per peer (at the same time), then runs every peer at once, each in its own
// region.
func (b *bench) massRound(ctx context.Context, n, round int) ([]massRun, error) {
	worlds := make([]*massWorld, len(b.massPeers))
	defer func() {
		for _, w := range worlds {
			if w != nil {
				unmountUnder(w.dir)
				_ = os.RemoveAll(w.dir)
			}
		}
	}()
	// The worlds are built at the same time (setup, not measured: each its own region and directory).
	buildErrs := make([]error, len(b.massPeers))
	var bwg sync.WaitGroup
	for j := range b.massPeers {
		dir, err := os.MkdirTemp(b.work, fmt.Sprintf("mass-%d-", n))
		if err != nil {
			return nil, err
		}
		bwg.Add(1)
		go func() {
			defer bwg.Done()
			t0 := time.Now()
			w, err := buildMass(ctx, b, n, dir)
			if err != nil {
				unmountUnder(dir)
				buildErrs[j] = fmt.Errorf("build the %d-group world: %w", n, err)
				return
			}
			worlds[j] = w
			b.logf("mass %d: world built in %s", n, time.Since(t0).Round(time.Millisecond))
		}()
	}
	bwg.Wait()
	if err := errors.Join(buildErrs...); err != nil {
		return nil, err
	}
	runs := make([]massRun, len(b.massPeers))
	errs := make([]error, len(b.massPeers))
	var wg sync.WaitGroup
	for j, peer := range b.massPeers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			runs[j], errs[j] = measureMass(ctx, b, worlds[j], peer, int64(2000+round))
			runs[j].Round = round
		}()
	}
	wg.Wait()
	var out []massRun
	for j, res := range runs {
		if errs[j] != nil {
			return out, errs[j]
		}
		out = append(out, res)
		b.logf("mass %d %s: all done in %s (bound %s: %s), %d recovered, %d gave up, %d calls, %d throttled",
			n, res.Peer, res.Total.Round(time.Millisecond), res.Bound.Round(time.Millisecond), res.BoundWhy, res.Recovered, res.GaveUp, res.Calls, res.Throttled)
	}
	return out, nil
}

// measureCLIStartup times an aws invocation on this machine against a region of its own, before any
// peer runs (climodel.go).
func (b *bench) measureCLIStartup(ctx context.Context) error {
	dir, err := os.MkdirTemp(b.work, "cli-startup-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	g, err := openRegion(filepath.Join(dir, "sim"), sim.Options{Speed: 1})
	if err != nil {
		return err
	}
	defer func() { _ = g.close() }()
	if b.cliStartup, err = cliStartup(ctx, g.r.Endpoint(), 5); err != nil {
		return err
	}
	b.logf("aws CLI start-up on this machine: %s (median of 5)", b.cliStartup.Round(time.Millisecond))
	return nil
}
