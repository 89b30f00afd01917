package agent

// Fault injection (issue 14, "Fault injection"): the full hand-over — watch sees the group terminate the
// instance, down hands the data over, the group's replacement runs up — with a tenth of the agents' API
// calls failing (throttling, internal errors, connections reset before or after the call is carried out,
// answers that come late) and EC2's eventual consistency on. Each run is played from one seed (the zone of
// the replacement, when the group launches it, how down keeps the filesystem still, and every fault), and
// is measured, not only passed: whether it converged, and the counts that must be zero.
//
// CI plays chaosCISeeds; scripts/reliability.sh plays HANDOVER_CHAOS_RUNS (200) seeds from
// HANDOVER_CHAOS_SEED and prints the figures. A failing run names its seed: HANDOVER_CHAOS_SEED=S
// HANDOVER_CHAOS_RUNS=1 replays it.

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	astypes "github.com/aws/aws-sdk-go-v2/service/autoscaling/types"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"golang.org/x/sys/unix"

	"github.com/handover/handover/cloud"
	"github.com/handover/handover/host"
	"github.com/handover/handover/internal/fail"
	"github.com/handover/handover/sim"
)

// chaosFaults are the injected faults: 10% of the agents' calls are hit. 5% answer a retryable error
// (half RequestLimitExceeded/Throttling, half InternalError/InternalFailure), 2% lose the connection
// before the call reaches EC2, 1% after EC2 carried it out (the client cannot tell it happened and
// retries it), 2% are answered a second late (after they are carried out; a second is longer than any
// transition at testSpeed). Setup and the test's own checks are not hit (AgentsOnly), and neither is
// instance metadata.
func chaosFaults() sim.Faults {
	return sim.Faults{
		ErrorRate:        map[string]float64{"*": 0.05},
		DropRate:         0.02,
		DropAfterRate:    0.01,
		SlowRate:         0.02,
		SlowLatency:      time.Second,
		ConsistencyDelay: failureLag,
		AgentsOnly:       true,
	}
}

// chaosCISeeds are the runs CI plays: fixed, so that a failure reproduces.
var chaosCISeeds = []int64{1, 2, 3, 4, 5, 6}

// chaosMaxInstances bounds the replacements a run may go through: an up that fails abandons its launch
// hook and the group launches another instance, as on AWS.
const chaosMaxInstances = 3

// launchHook is the launch lifecycle hook of the chaos tests' group.
const launchHook = "handover-launch"

// chaosScenario is what a seed chooses besides the faults.
type chaosScenario struct {
	zone    string // sim.ReplaceAZOther or sim.ReplaceAZSame
	launch  string // sim.ReplaceLaunchAtOnce or sim.ReplaceLaunchAfterGo
	release string // releaseUnmount (down runs a pre-stop command) or releaseFreeze
}

func (s chaosScenario) String() string { return s.zone + "-zone/" + s.launch + "/" + s.release }

func scenarioOf(seed int64) chaosScenario {
	rng := rand.New(rand.NewPCG(uint64(seed), 0xc4a05))
	pick := func(xs ...string) string { return xs[rng.IntN(len(xs))] }
	return chaosScenario{
		zone:    pick(sim.ReplaceAZOther, sim.ReplaceAZSame),
		launch:  pick(sim.ReplaceLaunchAtOnce, sim.ReplaceLaunchAfterGo),
		release: pick(releaseUnmount, releaseFreeze),
	}
}

// chaosFigures is what one run measured.
type chaosFigures struct {
	seed      int64
	scenario  chaosScenario
	converged bool
	why       string // why it did not converge
	instances int    // replacements up ran on until one converged
	// The counts that must be zero.
	leaked        int // volumes of the slot neither on the holder nor tagged superseded
	dupGeneration int // volumes beyond the first of a generation
	twoHolders    int // association changes after which the address was the public IP of two instances
	reassociated  int // associations that took the address from another instance (AllowReassociation)
	mismatches    int // files written before the trigger that differ (or are missing) after the recovery
	mountedDetach int // DetachVolume calls of a volume whose device was mounted
	// Informational.
	hookCompleted bool // the old instance's down completed the termination hook itself
	agentCalls    int
	faulted       int // agents' calls answered with an injected error or a dropped connection
	snapshots     int // snapshots the old instance's down took (more than one: a CreateSnapshot retried)
}

func (f chaosFigures) String() string {
	return fmt.Sprintf("chaos-figures seed=%d scenario=%s converged=%t instances=%d leaked=%d dup_generation=%d eip_two_holders=%d eip_reassociated=%d data_mismatches=%d mounted_detach=%d hook_completed=%t agent_calls=%d faulted=%d down_snapshots=%d why=%q",
		f.seed, f.scenario, f.converged, f.instances, f.leaked, f.dupGeneration, f.twoHolders, f.reassociated, f.mismatches, f.mountedDetach,
		f.hookCompleted, f.agentCalls, f.faulted, f.snapshots, f.why)
}

// chaosSeeds are the seeds to play: HANDOVER_CHAOS_RUNS from HANDOVER_CHAOS_SEED (default 1) when set,
// else chaosCISeeds.
func chaosSeeds(t *testing.T) []int64 {
	if os.Getenv("HANDOVER_CHAOS_RUNS") == "" {
		return chaosCISeeds
	}
	n, from := envCount(t, "HANDOVER_CHAOS_RUNS", 1), envCount(t, "HANDOVER_CHAOS_SEED", 1)
	seeds := make([]int64, n)
	for i := range seeds {
		seeds[i] = int64(from + i)
	}
	return seeds
}

// TestChaosHandover plays the hand-over under chaosFaults once per seed and fails on any non-zero count
// and on a run that did not converge (naming its seed and why); every run logs its figures.
func TestChaosHandover(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	var mu sync.Mutex
	var all []chaosFigures
	t.Run("runs", func(t *testing.T) {
		for _, seed := range chaosSeeds(t) {
			t.Run("seed="+strconv.FormatInt(seed, 10), func(t *testing.T) {
				t.Parallel()
				f := chaosHandover(t, seed)
				t.Log(f)
				mu.Lock()
				all = append(all, f)
				mu.Unlock()
				switch {
				case !f.converged:
					t.Errorf("seed %d (%s) did not converge: %s", seed, f.scenario, f.why)
				case f.leaked+f.dupGeneration+f.twoHolders+f.reassociated+f.mismatches+f.mountedDetach != 0:
					t.Errorf("seed %d (%s): a count that must be zero is not: %s", seed, f.scenario, f)
				}
			})
		}
	})
	t.Log(chaosSummary(all))
}

// chaosSummary sums the runs' figures in one line.
func chaosSummary(all []chaosFigures) string {
	var sum chaosFigures
	converged, hooks := 0, 0
	var failed []string
	for _, f := range all {
		if f.converged {
			converged++
		} else {
			failed = append(failed, fmt.Sprintf("%d (%s)", f.seed, f.why))
		}
		if f.hookCompleted {
			hooks++
		}
		sum.leaked += f.leaked
		sum.dupGeneration += f.dupGeneration
		sum.twoHolders += f.twoHolders
		sum.reassociated += f.reassociated
		sum.mismatches += f.mismatches
		sum.mountedDetach += f.mountedDetach
		sum.agentCalls += f.agentCalls
		sum.faulted += f.faulted
		sum.instances += f.instances
		if f.snapshots > 1 {
			sum.snapshots++
		}
	}
	return fmt.Sprintf("chaos-summary runs=%d converged=%d leaked=%d dup_generation=%d eip_two_holders=%d eip_reassociated=%d data_mismatches=%d mounted_detach=%d hook_completed_by_down=%d replacements=%d agent_calls=%d faulted=%d runs_with_extra_snapshot=%d not_converged=%q",
		len(all), converged, sum.leaked, sum.dupGeneration, sum.twoHolders, sum.reassociated, sum.mismatches, sum.mountedDetach,
		hooks, sum.instances, sum.agentCalls, sum.faulted, sum.snapshots, strings.Join(failed, "; "))
}

// observer records what the region reports through Observe.
type observer struct {
	mu  sync.Mutex
	obs []sim.Observation
}

func observe(w *testRegion) *observer {
	o := &observer{}
	stop := w.sim.Observe(func(x sim.Observation) {
		o.mu.Lock()
		defer o.mu.Unlock()
		o.obs = append(o.obs, x)
	})
	w.t.Cleanup(stop)
	return o
}

// counts are the observer's zero-counts: an address on two instances, an address taken from another
// instance, a mounted volume's detach requested by an agent.
func (o *observer) counts(t testing.TB) (twoHolders, reassociated, mountedDetach int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, x := range o.obs {
		switch {
		case len(x.Holders) > 1:
			twoHolders++
			t.Logf("the address %s is the public IP of %v after %s", x.PublicIP, x.Holders, x.Kind)
		case x.Kind == sim.ObserveAssociate && x.Replaced != "":
			reassociated++
			t.Logf("the address %s was taken from %s for %s", x.PublicIP, x.Replaced, x.InstanceID)
		case x.Kind == sim.ObserveDetach && x.Mounted && strings.HasPrefix(x.Caller, "AKIDi"):
			mountedDetach++
			t.Logf("%s detached %s while its device was mounted (force %t)", x.Caller, x.VolumeID, x.Force)
		}
	}
	return twoHolders, reassociated, mountedDetach
}

// checksums writes files of random sizes under dir (one in a subdirectory), syncs them and returns their
// SHA-256 by path relative to dir.
func writeChecksummed(t testing.TB, rng *rand.Rand, dir string, n int) map[string]string {
	t.Helper()
	sums := map[string]string{}
	for i := range n {
		name := fmt.Sprintf("file-%d.bin", i)
		if i == n-1 {
			name = filepath.Join("nested", "deeper", name)
		}
		data := make([]byte, 1+rng.IntN(512<<10))
		for j := range data {
			data[j] = byte(rng.Uint32())
		}
		path := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatalf("write %s: %v", path, err)
		}
		sum := sha256.Sum256(data)
		sums[name] = hex.EncodeToString(sum[:])
	}
	unix.Sync()
	return sums
}

// checksumMismatches counts the files of sums that are missing under dir or differ.
func checksumMismatches(t testing.TB, dir string, sums map[string]string) int {
	t.Helper()
	bad := 0
	names := make([]string, 0, len(sums))
	for name := range sums {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		data, err := os.ReadFile(filepath.Join(dir, name))
		got := sha256.Sum256(data)
		if err != nil || hex.EncodeToString(got[:]) != sums[name] {
			bad++
			t.Logf("%s under %s: read error %v, sha256 %x, want %s", name, dir, err, got, sums[name])
		}
	}
	return bad
}

// handoverGroup creates the group of one over us-east-1a and us-east-1b with a launch hook (ABANDON by
// default: a failed or silent up is replaced) and a termination hook (CONTINUE), and returns its first
// instance once running.
func (w *downWorld) handoverGroup(name string) string {
	w.t.Helper()
	_, err := w.ec2.CreateLaunchTemplate(w.ctx(), &ec2.CreateLaunchTemplateInput{
		LaunchTemplateName: aws.String(name),
		LaunchTemplateData: &ec2types.RequestLaunchTemplateData{
			ImageId: aws.String("ami-0123456789abcdef0"), InstanceType: ec2types.InstanceTypeM6iLarge,
			MetadataOptions: &ec2types.LaunchTemplateInstanceMetadataOptionsRequest{
				HttpTokens: ec2types.LaunchTemplateHttpTokensStateRequired, InstanceMetadataTags: ec2types.LaunchTemplateInstanceMetadataTagsStateEnabled,
			},
			TagSpecifications: []ec2types.LaunchTemplateTagSpecificationRequest{{
				ResourceType: ec2types.ResourceTypeInstance,
				Tags:         []ec2types.Tag{{Key: aws.String(cloud.TagGroup), Value: aws.String(w.group)}},
			}},
		},
	})
	if err != nil {
		w.t.Fatalf("CreateLaunchTemplate: %v", err)
	}
	_, err = w.as.CreateAutoScalingGroup(w.ctx(), &autoscaling.CreateAutoScalingGroupInput{
		AutoScalingGroupName: aws.String(name),
		LaunchTemplate:       &astypes.LaunchTemplateSpecification{LaunchTemplateName: aws.String(name)},
		MinSize:              aws.Int32(1), MaxSize: aws.Int32(1), DesiredCapacity: aws.Int32(1),
		AvailabilityZones: []string{"us-east-1a", "us-east-1b"},
		LifecycleHookSpecificationList: []astypes.LifecycleHookSpecification{
			// 30 s at the test speed: a silent up is replaced within the test's bounds.
			{LifecycleHookName: aws.String(launchHook), LifecycleTransition: aws.String("autoscaling:EC2_INSTANCE_LAUNCHING"),
				HeartbeatTimeout: aws.Int32(3000), DefaultResult: aws.String("ABANDON")},
			// 60 s at the test speed: down's heartbeats keep it alive.
			{LifecycleHookName: aws.String(terminateHook), LifecycleTransition: aws.String("autoscaling:EC2_INSTANCE_TERMINATING"),
				HeartbeatTimeout: aws.Int32(6000), DefaultResult: aws.String("CONTINUE")},
		},
	})
	if err != nil {
		w.t.Fatalf("CreateAutoScalingGroup: %v", err)
	}
	id := w.newMember(name, map[string]bool{})
	w.waitInstanceState(id, "running")
	return id
}

// upUntilConverged runs up (with the launch hook) on the group's instance first, and, each time up fails,
// on the instance the group launches instead (an up that fails abandons the hook), at most
// chaosMaxInstances instances. The mount of a failed instance is removed as its shutdown would. It
// returns the instance that converged ("" when none did), how many it tried, and why the last failed.
func (w *downWorld) upUntilConverged(asgName, first string, seen map[string]bool, running *agentRun) (string, int, string) {
	w.t.Helper()
	id, why := first, ""
	for n := 1; ; n++ {
		if running == nil {
			running = w.startAgent(id, w.upArgs(id, "--launch-hook", launchHook, "--timeout", "50s")...)
		}
		res, ok := running.waitFor(w.t, 2*waitBound)
		running = nil
		if ok && res.code == fail.CodeOK {
			return id, n, ""
		}
		why = fmt.Sprintf("up on %s (instance %d) exited %d: %s", id, n, res.code, lastLine(res.stderr))
		if !ok {
			why = fmt.Sprintf("up on %s (instance %d) did not end within %s", id, n, 2*waitBound)
		}
		w.t.Logf("%s\nits log:\n%s", why, res.stderr)
		if n == chaosMaxInstances {
			return "", n, why
		}
		// The group terminates the instance (ABANDON, or the hook's timeout); its mounts go with it.
		w.unmountUnder(filepath.Dir(w.mountPoint(id)))
		id = w.newMember(asgName, seen)
		w.waitInstanceState(id, "running")
	}
}

// unmountUnder removes every mount under dir (lazily, as an instance's shutdown does to its mounts).
func (w *testRegion) unmountUnder(dir string) {
	mounts, err := host.New("/dev", "/sys").Mounts()
	if err != nil {
		w.t.Fatal(err)
	}
	for i := len(mounts) - 1; i >= 0; i-- {
		if mp := mounts[i].MountPoint; mp == dir || strings.HasPrefix(mp, dir+"/") {
			_ = host.ThawMountPoint(mp)
			unix.Sync()
			if err := unix.Unmount(mp, unix.MNT_DETACH); err != nil {
				w.t.Errorf("unmount %s: %v", mp, err)
			}
		}
	}
}

func lastLine(s string) string {
	s = strings.TrimRight(s, "\n")
	return s[strings.LastIndex(s, "\n")+1:]
}

// waitFor waits at most bound for the run to end; ok is false when it did not (the run is stopped).
func (r *agentRun) waitFor(t testing.TB, bound time.Duration) (agentResult, bool) {
	select {
	case code := <-r.done:
		close(r.done)
		return agentResult{code: code, stdout: r.stdout.String(), stderr: r.stderr.String()}, true
	case <-time.After(bound):
		code := r.stop(t)
		return agentResult{code: code, stdout: r.stdout.String(), stderr: r.stderr.String()}, false
	}
}

// chaosHandover plays one run and measures it.
func chaosHandover(t *testing.T, seed int64) chaosFigures {
	sc := scenarioOf(seed)
	f := chaosFigures{seed: seed, scenario: sc}
	w := newDownWorld(t, func(o *sim.Options) {
		o.Seed, o.Jitter = seed, 0.3
		o.Faults = chaosFaults()
		o.Replacement = sim.Replacement{AZ: sc.zone, Launch: sc.launch}
	})
	w.unmountOnCleanup()
	obs := observe(w.testRegion)
	rng := rand.New(rand.NewPCG(uint64(seed), 0xda7a))
	alloc := w.allocateAddress(w.group)
	w.publicIP(alloc)
	asgName := w.group + "-asg"
	seen := map[string]bool{}
	first := w.handoverGroup(asgName)
	seen[first] = true
	old, _, why := w.upUntilConverged(asgName, first, seen, nil)
	if old == "" {
		f.why = "the first instance's up: " + why
		return f
	}
	sums := writeChecksummed(t, rng, w.mountPoint(old), 6)

	args := []string{"watch", "--volume", "data:/dev/sdf:" + w.mountPoint(old),
		"--terminate-hook", terminateHook, "--heartbeat-interval", "500ms",
		"--state-file", filepath.Join(w.dir, "watch-"+old+".json"), "--poll-interval", "50ms"}
	if sc.release == releaseUnmount {
		args = append(args, "--pre-stop", "sync")
	}
	watch := w.startAgent(old, args...)
	watch.waitLog(t, "watching instance metadata")
	if _, err := w.as.TerminateInstanceInAutoScalingGroup(w.ctx(), &autoscaling.TerminateInstanceInAutoScalingGroupInput{
		InstanceId: aws.String(old), ShouldDecrementDesiredCapacity: aws.Bool(false),
	}); err != nil {
		t.Fatalf("TerminateInstanceInAutoScalingGroup: %v", err)
	}
	var repl string
	var upRun *agentRun
	if sc.launch == sim.ReplaceLaunchAtOnce {
		// The replacement boots beside the old instance's down; its up runs as soon as it is running.
		repl = w.newMember(asgName, seen)
		w.waitInstanceState(repl, "running")
		upRun = w.startAgent(repl, w.upArgs(repl, "--launch-hook", launchHook, "--timeout", "50s")...)
	}
	watch.waitLog(t, "hand-over done for this event")
	if code := watch.stop(t); code != fail.CodeOK {
		t.Logf("watch on %s exited %d", old, code)
	}
	f.hookCompleted = len(w.callsBy("CompleteLifecycleAction", old)) > 0
	f.snapshots = len(w.callsBy("CreateSnapshot", old))
	// The old instance's shutdown ends its mounts (freeze mode leaves the filesystem mounted).
	w.unmountUnder(filepath.Dir(w.mountPoint(old)))
	if repl == "" {
		repl = w.newMember(asgName, seen)
		w.waitInstanceState(repl, "running")
	}
	repl, f.instances, why = w.upUntilConverged(asgName, repl, seen, upRun)
	w.settle()
	f.twoHolders, f.reassociated, f.mountedDetach = obs.counts(t)
	for _, c := range w.sim.Calls() {
		if strings.HasPrefix(c.Caller, "AKIDi") {
			f.agentCalls++
			if slices.Contains([]string{"RequestLimitExceeded", "InternalError", "Throttling", "InternalFailure", "ConnectionDropped"}, c.Code) ||
				strings.HasPrefix(c.Code, "ResponseDropped") {
				f.faulted++
			}
		}
	}
	f.leaked, f.dupGeneration = w.slotLeaks(repl)
	if repl == "" {
		f.why = why
		return f
	}
	f.mismatches = checksumMismatches(t, w.mountPoint(repl), sums)
	holder := w.addressHolder(alloc)
	vols := w.attachedVolumes(repl)
	switch {
	case holder != repl:
		f.why = fmt.Sprintf("up on %s succeeded but the address is on %q", repl, holder)
	case len(vols) != 1:
		f.why = fmt.Sprintf("up on %s succeeded with volumes %v attached", repl, vols)
	case f.mismatches != 0:
		f.why = fmt.Sprintf("%d files differ on %s", f.mismatches, repl)
	default:
		f.converged = true
	}
	return f
}

// slotLeaks counts the slot's volumes that are neither attached to holder nor tagged superseded, and the
// volumes beyond the first of each generation.
func (w *testRegion) slotLeaks(holder string) (leaked, dup int) {
	w.t.Helper()
	perGen := map[string]int{}
	for _, v := range w.slotVolumes() {
		id := aws.ToString(v.VolumeId)
		perGen[tagOf(v.Tags, cloud.TagGeneration)]++
		onHolder := false
		for _, a := range v.Attachments {
			onHolder = onHolder || aws.ToString(a.InstanceId) == holder
		}
		if !onHolder && tagOf(v.Tags, cloud.TagSuperseded) != "true" {
			leaked++
			w.t.Logf("leaked: %s (generation %s, %s, attachments %+v, tags %v)", id, tagOf(v.Tags, cloud.TagGeneration), v.State, v.Attachments, v.Tags)
		}
	}
	for g, n := range perGen {
		if n > 1 {
			dup += n - 1
			w.t.Logf("generation %s has %d volumes", g, n)
		}
	}
	return leaked, dup
}
