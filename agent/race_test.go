package agent

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	"github.com/aws/aws-sdk-go-v2/service/ec2"

	"github.com/handover/handover/cloud"
	"github.com/handover/handover/host"
	"github.com/handover/handover/internal/fail"
	"github.com/handover/handover/sim"
)

// raceRounds is how many rounds each race test plays: HANDOVER_RACE_ROUNDS, default 100 (the fence
// issue's number; scripts may raise it).
func raceRounds(t *testing.T) int {
	if v := os.Getenv("HANDOVER_RACE_ROUNDS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("HANDOVER_RACE_ROUNDS=%q: want a positive number", v)
		}
		return n
	}
	return 100
}

// raceResult is one claimant's run.
type raceResult struct {
	id  string
	res agentResult
}

// raceUp runs `handover up` as each instance at the same moment and returns their results.
func (w *testRegion) raceUp(ids []string, args func(id string) []string) []raceResult {
	w.t.Helper()
	out := make([]raceResult, len(ids))
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i, id := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			out[i] = raceResult{id: id, res: w.runAgent(w.ctx(), id, nil, args(id)...)}
		}()
	}
	close(start)
	wg.Wait()
	return out
}

// checkOneWinner checks a race's outcome: exactly one claimant exits 0 and holds the address; every other
// exits 4 with one line; no generation of the slot has two volumes; the volumes are attached only to the
// winner. It returns the winner.
func (w *testRegion) checkOneWinner(round int, alloc string, results []raceResult) string {
	w.t.Helper()
	winner := ""
	for _, r := range results {
		switch r.res.code {
		case fail.CodeOK:
			if winner != "" {
				w.t.Errorf("round %d: %s and %s both succeeded", round, winner, r.id)
			}
			winner = r.id
		case fail.CodeFenced:
			line := strings.TrimRight(r.res.stderr[strings.LastIndex(strings.TrimRight(r.res.stderr, "\n"), "\n")+1:], "\n")
			if !strings.HasPrefix(line, "handover up: ") {
				w.t.Errorf("round %d: the loser %s did not end with one line: %q", round, r.id, line)
			}
		default:
			w.t.Errorf("round %d: %s exited %d, want 0 or 4:\n%s", round, r.id, r.res.code, r.res.stderr)
		}
	}
	if winner == "" {
		w.t.Fatalf("round %d: nobody won", round)
	}
	if h := w.addressHolder(alloc); h != winner {
		w.t.Errorf("round %d: the address is on %q, the winner is %s", round, h, winner)
	}
	perGen := map[string][]string{}
	for _, v := range w.slotVolumes() {
		g := tagOf(v.Tags, cloud.TagGeneration)
		perGen[g] = append(perGen[g], aws.ToString(v.VolumeId))
		for _, a := range v.Attachments {
			if id := aws.ToString(a.InstanceId); id != winner && !w.isStopped(id) {
				w.t.Errorf("round %d: %s is attached to %s, not to the winner %s", round, aws.ToString(v.VolumeId), id, winner)
			}
		}
	}
	for g, vols := range perGen {
		if len(vols) > 1 {
			w.t.Errorf("round %d: generation %s has %d volumes: %v", round, g, len(vols), vols)
		}
	}
	return winner
}

func (w *testRegion) isStopped(id string) bool {
	out, err := w.ec2.DescribeInstances(w.ctx(), &ec2.DescribeInstancesInput{InstanceIds: []string{id}})
	if err != nil || len(out.Reservations) == 0 {
		return false
	}
	return out.Reservations[0].Instances[0].State.Name == "stopped"
}

// TestRaceFirstBoot: two (then three) instances of one group in different zones run `up` at the same
// moment on a group that has no volume yet. Exactly one makes the volume, the filesystem and the mount and
// holds the address; every other exits 4 having made no volume, no filesystem and no mount.
func TestRaceFirstBoot(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	for _, n := range []int{2, 3} {
		t.Run(fmt.Sprintf("%d claimants", n), func(t *testing.T) {
			rounds := raceRounds(t)
			if n == 3 {
				rounds = max(1, rounds/5)
			}
			for round := range rounds {
				t.Run(strconv.Itoa(round), func(t *testing.T) {
					t.Parallel()
					raceFirstBootRound(t, round, n)
				})
			}
		})
	}
}

func raceFirstBootRound(t *testing.T, round, n int, opts ...func(*sim.Options)) {
	w := newTestRegion(t, append([]func(*sim.Options){func(o *sim.Options) { o.Seed = int64(round + 1); o.Jitter = 0.3 }}, opts...)...)
	w.unmountOnCleanup()
	alloc := w.allocateAddress(testGroup)
	var ids []string
	for _, az := range []string{"us-east-1a", "us-east-1b", "us-east-1c"}[:n] {
		ids = append(ids, w.runInstance(az, groupTags, true))
	}
	// These instances are in no Auto Scaling group, so a loser that finds the winner holding the address sees
	// a live holder and waits --release-timeout before exit 4; a group's launching instance is a race lost at
	// once (HolderVerdict.Launching).
	results := w.raceUp(ids, func(id string) []string { return w.upArgs(id, "--release-timeout", "2s") })
	w.settle()
	winner := w.checkOneWinner(round, alloc, results)
	if vols := w.slotVolumes(); len(vols) != 1 {
		t.Errorf("round %d: %d volumes, want the winner's one", round, len(vols))
	}
	for _, r := range results {
		_, mounted, err := host.New("/dev", "/sys").MountedAt(w.mountPoint(r.id))
		switch {
		case err != nil:
			t.Fatal(err)
		case r.id == winner && !mounted:
			t.Errorf("round %d: the winner %s has nothing mounted", round, r.id)
		case r.id != winner && mounted:
			t.Errorf("round %d: the loser %s mounted something", round, r.id)
		case r.id != winner && strings.Contains(r.res.stderr, "filesystem made"):
			t.Errorf("round %d: the loser %s made a filesystem", round, r.id)
		}
	}
}

// TestRaceReplacementsOfAStoppedHolder: the old instance holds the address and the newest volume and is
// stopped; two replacements, one in its zone and one in the other, run `up` at the same moment (the first
// would detach and reattach the volume, the second restore the snapshot). Exactly one of them ends with
// the address and the data; nothing is made twice; the loser changed nothing.
func TestRaceReplacementsOfAStoppedHolder(t *testing.T) {
	t.Parallel()
	for round := range raceRounds(t) {
		t.Run(strconv.Itoa(round), func(t *testing.T) {
			t.Parallel()
			raceStoppedHolderRound(t, round)
		})
	}
}

func raceStoppedHolderRound(t *testing.T, round int, opts ...func(*sim.Options)) {
	{
		w := newTestRegion(t, append([]func(*sim.Options){func(o *sim.Options) { o.Seed = int64(round + 1); o.Jitter = 0.3 }}, opts...)...)
		alloc := w.allocateAddress(testGroup)
		old := w.runInstance("us-east-1a", groupTags, true)
		vol := w.createSlotVolume("us-east-1a", 1, nil)
		w.waitVolumeState(vol, "available")
		w.attachAndWait(vol, old)
		w.snapshot(vol, 1, true, true)
		w.associate(alloc, old)
		w.stop(old)
		same, other := w.runInstance("us-east-1a", groupTags, true), w.runInstance("us-east-1b", groupTags, true)
		results := w.raceUp([]string{same, other}, func(id string) []string { return w.upArgs(id, "--no-mount", "--release-timeout", "2s") })
		w.settle()
		winner := w.checkOneWinner(round, alloc, results)
		attached := 0
		for _, v := range w.slotVolumes() {
			for _, a := range v.Attachments {
				if aws.ToString(a.InstanceId) == winner {
					attached++
				}
			}
		}
		if attached != 1 {
			t.Errorf("round %d: %d of the slot's volumes are attached to the winner %s, want 1", round, attached, winner)
		}
	}
}

// attachAndWait attaches a volume through the API and waits for the attachment.
func (w *testRegion) attachAndWait(vol, instance string) {
	w.t.Helper()
	if _, err := w.ec2.AttachVolume(w.ctx(), &ec2.AttachVolumeInput{VolumeId: aws.String(vol), InstanceId: aws.String(instance), Device: aws.String("/dev/sdf")}); err != nil {
		w.t.Fatalf("AttachVolume: %v", err)
	}
	w.waitVolumeState(vol, "in-use")
	w.sim.WaitIdle(w.ctx())
}

// stop stops an instance and waits for it.
func (w *testRegion) stop(id string) {
	w.t.Helper()
	if _, err := w.ec2.StopInstances(w.ctx(), &ec2.StopInstancesInput{InstanceIds: []string{id}}); err != nil {
		w.t.Fatalf("StopInstances: %v", err)
	}
	w.waitInstanceState(id, "stopped")
}

// TestUpKeepsAddressAndDataTogether: a run that ends without the data does not keep the address. A
// refusal it can know of beforehand (here --require-data on an empty slot) is made before the address is
// taken; a failure after it took the address (here a device that never appears) hands the address back.
func TestUpKeepsAddressAndDataTogether(t *testing.T) {
	t.Parallel()
	t.Run("refused before the address is taken", func(t *testing.T) {
		t.Parallel()
		w := newTestRegion(t)
		alloc := w.allocateAddress(testGroup)
		id := w.runInstance("us-east-1a", groupTags, true)
		w.sim.ResetCalls()
		res := w.runAgent(w.ctx(), id, nil, w.upArgs(id, "--require-data")...)
		mustExit(t, res, fail.CodePrecondition, "--require-data")
		if h := w.addressHolder(alloc); h != "" {
			t.Errorf("the address went to %s although up refused", h)
		}
		if m := w.mutatingCalls(); len(m) != 0 {
			t.Errorf("a refused up made mutating calls %v", m)
		}
	})
	t.Run("handed back after a failure", func(t *testing.T) {
		t.Parallel()
		w := newTestRegion(t)
		alloc := w.allocateAddress(testGroup)
		id := w.runInstance("us-east-1a", groupTags, true)
		res := w.runAgent(w.ctx(), id, map[string]string{"HANDOVER_DEV_DIR": t.TempDir()}, w.upArgs(id, "--timeout", "4s")...)
		mustExit(t, res, fail.CodeFailed, "did not finish within --timeout")
		if h := w.addressHolder(alloc); h != "" {
			t.Errorf("the address stays on %s although up ended without the data", h)
		}
		if !strings.Contains(res.stderr, "handed back the Elastic IP") {
			t.Errorf("the log does not say the address was handed back:\n%s", res.stderr)
		}
	})
}

// TestUpSizesTheReleaseWaitFromTheTerminationHook: in a group whose termination hook gives the old instance
// 15 minutes, up waits for it at least that long (plus a minute) before recovering without it, unless
// --release-timeout says otherwise.
func TestUpSizesTheReleaseWaitFromTheTerminationHook(t *testing.T) {
	t.Parallel()
	w := newTestRegion(t)
	w.allocateAddress(testGroup)
	id := w.launchGroup("orders-asg", nil)
	if _, err := w.as.PutLifecycleHook(w.ctx(), &autoscaling.PutLifecycleHookInput{
		AutoScalingGroupName: aws.String("orders-asg"), LifecycleHookName: aws.String("terminate"),
		LifecycleTransition: aws.String("autoscaling:EC2_INSTANCE_TERMINATING"), HeartbeatTimeout: aws.Int32(900),
	}); err != nil {
		t.Fatal(err)
	}
	res := w.runAgent(w.ctx(), id, nil, w.upArgs(id, "--no-mount", "--launch-hook", "launch")...)
	mustSucceed(t, res)
	if !strings.Contains(res.stderr, "release_timeout=16m0s") {
		t.Errorf("up did not size --release-timeout from the 15-minute termination hook:\n%s", res.stderr)
	}
	res = w.runAgent(w.ctx(), id, nil, w.upArgs(id, "--no-mount", "--launch-hook", "launch", "--release-timeout", "2m")...)
	mustSucceed(t, res)
	if strings.Contains(res.stderr, "sized from the group's termination hook") {
		t.Errorf("an explicit --release-timeout was overridden:\n%s", res.stderr)
	}
}
