package agent

import (
	"encoding/json"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	astypes "github.com/aws/aws-sdk-go-v2/service/autoscaling/types"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/handover/handover/cloud"
	"github.com/handover/handover/failover"
	"github.com/handover/handover/internal/fail"
	"github.com/handover/handover/sim"
)

// The iam-policy tests of iampolicy_test.go compare the call log with the table of calls. These hold the
// printed policy to IAM itself: the simulator evaluates it (sim/iam.go) for every call of the instance
// under test, as AWS would for the instance's role.
//
//   - TestIAMPolicyEnforced: every scenario of iamScenarios passes with the policy `handover iam-policy`
//     prints for it attached, for its group and for any group, and no call of it is refused (this is what
//     the call-log test cannot see: a row of awsCalls that names the wrong resource types, or a condition
//     that does not hold for the resources the call touches). Then each action of each statement, removed
//     from the policy of a scenario that needed it, makes that scenario fail: a call is refused, and
//     handover says which action is missing ("not authorized to call ec2:AttachVolume: add it to the IAM
//     role ..."). Every action of every statement is needed, so removing any statement breaks a scenario
//     too: the enforced proof that the policy holds nothing extra.
//   - TestIAMGroupCannotTouchAnotherGroup: with its group's policy, an instance cannot use another group's
//     Elastic IP, volumes, snapshots, instances or Auto Scaling group, nor tag its own resources out of its
//     group.
//   - TestIAMDeniedCallIsOneLineExit3: a refused call ends the command with exit 3 and one line naming the
//     action, and is not retried.

// deniedCodes are the codes of a refused call in the simulator's call log.
var deniedCodes = map[string]bool{cloud.CodeUnauthorizedOp: true, "AccessDenied": true}

// enforcing is a beginRun that attaches doc to the instance under test, and remembers the instance, so
// that its calls and what handover printed can be read after the scenario, even one that failed.
type enforcing struct {
	t   testing.TB
	doc []byte

	mu sync.Mutex
	w  *testRegion
	id string
}

func (e *enforcing) begin(w *testRegion, id string) {
	w.sim.ResetCalls()
	if err := w.sim.SetInstancePolicy(id, e.doc); err != nil {
		e.t.Fatalf("SetInstancePolicy: %v", err)
	}
	w.transcript = &syncBuffer{}
	e.mu.Lock()
	e.w, e.id = w, id
	e.mu.Unlock()
}

// underTest returns the region and the instance of the scenario once begin has run (nil before).
func (e *enforcing) underTest() (*testRegion, string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.w, e.id
}

// softT is a testing.TB whose failures are recorded instead of failing the test: a scenario run under a
// policy that lacks a permission must fail, and the test checks that it did and how. Fatal ends the
// scenario's goroutine, as it would a test's. Everything else (Cleanup, TempDir, Helper, Log) is the
// real test's.
type softT struct {
	testing.TB
	settled func() bool // the run has the outcome the test looks for: its waits need not go on
	mu      sync.Mutex
	failed  []string
	ended   bool // the scenario returned: a Fatal from a cleanup only records
}

// Abandoned ends the scenario's waits (simtest.Eventually) once the outcome is settled: a scenario that
// lost a permission otherwise waits out its bounds for what can no longer happen.
func (s *softT) Abandoned() bool { return s.settled != nil && s.settled() }

func (s *softT) record(msg string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failed = append(s.failed, msg)
}

func (s *softT) stop() {
	s.mu.Lock()
	ended := s.ended
	s.mu.Unlock()
	if !ended {
		runtime.Goexit()
	}
}

func (s *softT) Error(args ...any)                 { s.record(fmt.Sprint(args...)) }
func (s *softT) Errorf(format string, args ...any) { s.record(fmt.Sprintf(format, args...)) }
func (s *softT) Fail()                             { s.record("Fail") }
func (s *softT) FailNow()                          { s.record("FailNow"); s.stop() }
func (s *softT) Fatal(args ...any)                 { s.record(fmt.Sprint(args...)); s.stop() }
func (s *softT) Fatalf(format string, args ...any) { s.record(fmt.Sprintf(format, args...)); s.stop() }
func (s *softT) Skip(args ...any)                  { s.record("skipped: " + fmt.Sprint(args...)); s.stop() }
func (s *softT) Skipf(format string, args ...any) {
	s.record("skipped: " + fmt.Sprintf(format, args...))
	s.stop()
}
func (s *softT) SkipNow() { s.record("skipped"); s.stop() }
func (s *softT) Failed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.failed) > 0
}

// enforcedRun is one run of a scenario under a policy.
type enforcedRun struct {
	run        iamRun   // what the scenario returned (empty when it failed)
	failures   []string // the scenario's own failures (soft runs)
	calls      []sim.Call
	transcript string // everything handover printed, as the instance under test
}

// runEnforced runs sc with doc attached to its instance under test. With settled (a soft run), the
// scenario's failures are returned instead of failing t, and its waits end once settled holds.
func runEnforced(t *testing.T, sc *iamScenario, doc []byte, settled func(enforcedRun) bool) enforcedRun {
	t.Helper()
	e := &enforcing{t: t, doc: doc}
	var out enforcedRun
	if settled == nil {
		out.run = sc.run(t, e.begin)
	} else {
		st := &softT{TB: t, settled: func() bool {
			w, id := e.underTest()
			return w != nil && settled(enforcedRun{calls: w.callsOf(id), transcript: w.transcript.String()})
		}}
		e.t = st
		done := make(chan struct{})
		go func() {
			defer close(done)
			out.run = sc.run(st, e.begin)
		}()
		<-done
		st.mu.Lock()
		st.ended = true
		out.failures = append([]string(nil), st.failed...)
		st.mu.Unlock()
	}
	w, id := e.underTest()
	if w == nil {
		t.Fatalf("the scenario ended before its instance under test ran (setup failed): %q", out.failures)
	}
	out.calls, out.transcript = w.callsOf(id), w.transcript.String()
	return out
}

// policyFlags are the iam-policy flags of a scenario.
func (sc *iamScenario) policyFlags() []string {
	group := sc.group
	if group == "" {
		group = testGroup
	}
	return append([]string{"--group", group}, sc.policy...)
}

// without is doc with action removed from statement sid (and the statement removed if it held only it).
func without(doc policyDocument, sid, action string) policyDocument {
	out := policyDocument{Version: doc.Version}
	for _, s := range doc.Statement {
		if s.Sid == sid {
			var kept []string
			for _, a := range s.Action {
				if a != action {
					kept = append(kept, a)
				}
			}
			if len(kept) == 0 {
				continue
			}
			s.Action = kept
		}
		out.Statement = append(out.Statement, s)
	}
	return out
}

func marshalPolicy(t testing.TB, doc policyDocument) []byte {
	t.Helper()
	b, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// refused are the calls of a run that AWS refused.
func refused(calls []sim.Call) []sim.Call {
	var out []sim.Call
	for _, c := range calls {
		if deniedCodes[c.Code] {
			out = append(out, c)
		}
	}
	return out
}

// TestIAMPolicyEnforced: every scenario passes under the printed policy; removing any one action of any
// one statement breaks a scenario that needed it, and handover names the action.
func TestIAMPolicyEnforced(t *testing.T) {
	t.Parallel()
	type passed struct {
		doc  policyDocument
		uses map[policyUse]bool
		run  enforcedRun
	}
	results := make([]*passed, len(iamScenarios))
	t.Run("with the printed policy", func(t *testing.T) {
		for i, sc := range iamScenarios {
			t.Run(sc.name, func(t *testing.T) {
				t.Parallel()
				if sc.root {
					requireRoot(t)
				}
				doc := printedPolicy(t, sc.policyFlags()...)
				run := runEnforced(t, sc, marshalPolicy(t, doc), nil)
				if t.Failed() {
					return
				}
				if len(run.calls) == 0 {
					t.Fatal("the call log shows no call of the instance under test: the scenario proves nothing")
				}
				for _, c := range refused(run.calls) {
					t.Errorf("%s refused (%s) under handover iam-policy %s\nhandover printed:\n%s", c.Action, c.Code, strings.Join(sc.policyFlags(), " "), run.transcript)
				}
				results[i] = &passed{doc: doc, uses: policyUses(t, sc.policyFlags()), run: run}
			})
		}
	})
	// The default policy, for any group (StringLike "?*" on the tag instead of StringEquals), holds too.
	t.Run("with the printed policy for any group", func(t *testing.T) {
		for _, sc := range iamScenarios {
			t.Run(sc.name, func(t *testing.T) {
				t.Parallel()
				if sc.root {
					requireRoot(t)
				}
				run := runEnforced(t, sc, marshalPolicy(t, printedPolicy(t, sc.policy...)), nil)
				for _, c := range refused(run.calls) {
					t.Errorf("%s refused (%s) under handover iam-policy %s\nhandover printed:\n%s", c.Action, c.Code, strings.Join(sc.policy, " "), run.transcript)
				}
			})
		}
	})
	for i, r := range results {
		if r == nil {
			t.Skipf("scenario %q did not pass under its policy: no removal is tried", iamScenarios[i].name)
		}
	}

	// Which scenarios needed each (statement, action) of their policy, by the table of calls.
	type grant struct{ sid, action string }
	neededBy := map[grant][]int{}
	var grantsInOrder []grant // each (statement, action) of the scenarios' policies, once
	listed := map[grant]bool{}
	for i, r := range results {
		have := grants(r.doc)
		seen := map[grant]bool{}
		for _, c := range r.run.calls {
			for _, row := range callRows(c.Action, r.uses) {
				for _, p := range row.needs {
					g := grant{p.in.sid, p.action}
					if have[g.sid+" "+g.action] && !seen[g] {
						seen[g] = true
						neededBy[g] = append(neededBy[g], i)
					}
				}
			}
		}
		for _, s := range r.doc.Statement {
			for _, a := range s.Action {
				if g := (grant{s.Sid, a}); !listed[g] {
					listed[g] = true
					grantsInOrder = append(grantsInOrder, g)
				}
			}
		}
	}
	t.Run("without one action", func(t *testing.T) {
		for _, g := range grantsInOrder {
			t.Run(g.sid+" "+g.action, func(t *testing.T) {
				t.Parallel()
				if len(neededBy[g]) == 0 {
					t.Fatalf("no scenario needed %s in %s, which a printed policy holds: the policy has a permission too many", g.action, g.sid)
				}
				var tried []string
				for _, i := range neededBy[g] {
					sc := iamScenarios[i]
					uses := results[i].uses
					run := runEnforced(t, sc, marshalPolicy(t, without(results[i].doc, g.sid, g.action)), func(r enforcedRun) bool {
						return brokeOn(r, uses, g.sid, g.action) == "" && reportOf(r.transcript, g.action) != ""
					})
					why := brokeOn(run, uses, g.sid, g.action)
					if why != "" {
						tried = append(tried, fmt.Sprintf("%q: %s", sc.name, why))
						continue
					}
					if line := reportOf(run.transcript, g.action); line == "" {
						t.Errorf("%q refused %s, but handover did not say so: no line says \"not authorized to call\" and names it\nhandover printed:\n%s",
							sc.name, g.action, run.transcript)
					} else if testing.Verbose() {
						t.Logf("%q without %s in %s: %s", sc.name, g.action, g.sid, line)
					}
					return
				}
				t.Errorf("without %s in %s no scenario that needs it failed on it:\n%s", g.action, g.sid, strings.Join(tried, "\n"))
			})
		}
	})
}

// brokeOn says why the run does not show the scenario breaking on the missing permission ("" when it
// does): some call that needs action in statement sid was refused.
func brokeOn(run enforcedRun, uses map[policyUse]bool, sid, action string) string {
	for _, c := range refused(run.calls) {
		for _, row := range callRows(c.Action, uses) {
			for _, p := range row.needs {
				if p.in.sid == sid && p.action == action {
					return ""
				}
			}
		}
	}
	if len(refused(run.calls)) == 0 {
		return fmt.Sprintf("no call was refused (the scenario's own failures: %q)", run.failures)
	}
	return fmt.Sprintf("refused %v, none of which needs it", refused(run.calls))
}

// reportOf is the line of handover's output that reports action refused: the one line of a command that
// failed ("handover CMD: not authorized to call ..."), else the warning of a step it could do without
// ("" when there is none).
func reportOf(transcript, action string) string {
	found := ""
	for _, line := range strings.Split(transcript, "\n") {
		if !strings.Contains(line, "not authorized to call ") || !strings.Contains(line, action) {
			continue
		}
		if cmd, _, ok := strings.Cut(line, ": not authorized to call "); ok && strings.HasPrefix(cmd, "handover ") && len(strings.Fields(cmd)) == 2 {
			return line
		}
		if found == "" {
			found = line
		}
	}
	return found
}

// TestIAMDeniedCallIsOneLineExit3: up with a policy that lacks one permission stops at the call that
// needs it, once (a refusal is not retried), with exit 3 and one line that names the action, says where
// to add it, and quotes AWS. A creation whose tags are refused names ec2:CreateTags too; Auto Scaling's
// AccessDenied is told the same way.
func TestIAMDeniedCallIsOneLineExit3(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, sid, action string
		args              []string
		op                string // the API operation refused
		want              string // the start of the line after "handover CMD: "
	}{
		{name: "AttachVolume", sid: scopeVolumes.sid, action: "ec2:AttachVolume", op: "AttachVolume",
			want: "not authorized to call ec2:AttachVolume: add it to the IAM role handover runs with (handover iam-policy prints the policy); " +
				"AWS said UnauthorizedOperation: You are not authorized to perform this operation. User: arn:aws:sts::123456789012:assumed-role/"},
		{name: "CreateTags of a CreateVolume", sid: scopeTagVolumesAtCreation.sid, action: "ec2:CreateTags", op: "CreateVolume",
			want: "not authorized to call ec2:CreateVolume (and ec2:CreateTags for the tags it sets): add them to the IAM role handover runs with (handover iam-policy prints the policy); " +
				"AWS said UnauthorizedOperation: You are not authorized to perform this operation. User: "},
		{name: "DescribeAutoScalingInstances", sid: scopeDescribe.sid, action: "autoscaling:DescribeAutoScalingInstances", op: "DescribeAutoScalingInstances",
			want: "not authorized to call autoscaling:DescribeAutoScalingInstances: add it to the IAM role handover runs with (handover iam-policy prints the policy); AWS said AccessDenied: User: "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			w := newTestRegion(t)
			w.allocateAddress(testGroup)
			id := w.runInstance("us-east-1a", groupTags, true)
			doc := without(printedPolicy(t, "--group", testGroup, "--commands", "up"), tc.sid, tc.action)
			if err := w.sim.SetInstancePolicy(id, marshalPolicy(t, doc)); err != nil {
				t.Fatal(err)
			}
			w.sim.ResetCalls()
			res := w.runAgent(w.ctx(), id, nil, w.upArgs(id, "--no-mount")...)
			if res.code != fail.CodePrecondition {
				t.Fatalf("exit %d, want 3\nstdout:\n%s\nstderr:\n%s", res.code, res.stdout, res.stderr)
			}
			lines := strings.Split(strings.TrimRight(res.stderr, "\n"), "\n")
			last := lines[len(lines)-1]
			if !strings.HasPrefix(last, "handover up: "+tc.want) || !strings.Contains(last, "is not authorized to perform: "+tc.action+" on resource: ") {
				t.Errorf("the error line:\n%s\nwant it to start with:\nhandover up: %s\nand quote AWS on %s", last, tc.want, tc.action)
			}
			n := 0
			for _, c := range w.callsOf(id) {
				if c.Action == tc.op {
					n++
					if !deniedCodes[c.Code] {
						t.Errorf("%s answered %q, want a refusal", tc.op, c.Code)
					}
				}
			}
			if n != 1 {
				t.Errorf("%s called %d times, want once: a refusal is not retried", tc.op, n)
			}
		})
	}
}

// TestIAMGroupCannotTouchAnotherGroup: an instance of group a, with the broadest policy iam-policy prints
// for its group (every command, every option), calls AWS directly with its own credentials. It cannot
// use group b's Elastic IP, volumes, snapshots, instance or Auto Scaling group, nor take its own
// resources out of group a by tagging; what its group owns it can use (the same calls on a's resources
// pass), and nothing it was refused changed.
func TestIAMGroupCannotTouchAnotherGroup(t *testing.T) {
	t.Parallel()
	w := newDownWorld(t)
	const a, b = "a", "b"
	tagsOf := func(g string, more ...string) map[string]string {
		m := map[string]string{cloud.TagGroup: g}
		for i := 0; i+1 < len(more); i += 2 {
			m[more[i]] = more[i+1]
		}
		return m
	}
	volume := func(g string, more ...string) string {
		out, err := w.ec2.CreateVolume(w.ctx(), &ec2.CreateVolumeInput{AvailabilityZone: aws.String("us-east-1a"), Size: aws.Int32(1),
			VolumeType: ec2types.VolumeTypeGp3, TagSpecifications: cloud.TagSpec(ec2types.ResourceTypeVolume,
				tagsOf(g, append([]string{cloud.TagSlot, cloud.DefaultSlot, cloud.TagGeneration, "1"}, more...)...))})
		if err != nil {
			t.Fatal(err)
		}
		w.waitVolumeState(aws.ToString(out.VolumeId), "available")
		return aws.ToString(out.VolumeId)
	}
	snapshot := func(vol, g string) string {
		out, err := w.ec2.CreateSnapshot(w.ctx(), &ec2.CreateSnapshotInput{VolumeId: aws.String(vol),
			TagSpecifications: cloud.TagSpec(ec2types.ResourceTypeSnapshot, tagsOf(g, cloud.TagSlot, cloud.DefaultSlot))})
		if err != nil {
			t.Fatal(err)
		}
		return aws.ToString(out.SnapshotId)
	}
	instA := w.runInstance("us-east-1a", tagsOf(a, cloud.TagRole, failover.RoleStandby), true)
	instB := w.runInstance("us-east-1a", tagsOf(b, cloud.TagRole, failover.RolePrimary), true)
	eipA, eipB := w.allocateAddress(a), w.allocateAddress(b)
	w.associate(eipB, instB)
	volA, volB, spareB := volume(a), volume(b), volume(b, cloud.TagSuperseded, "true")
	w.attach(volB, instB)
	snapA, snapB := snapshot(volA, a), snapshot(volB, b)
	if err := w.sim.WaitIdle(w.ctx()); err != nil {
		t.Fatal(err)
	}
	if _, err := w.ec2.CreateLaunchTemplate(w.ctx(), &ec2.CreateLaunchTemplateInput{LaunchTemplateName: aws.String("b"),
		LaunchTemplateData: &ec2types.RequestLaunchTemplateData{ImageId: aws.String("ami-0123456789abcdef0"), InstanceType: ec2types.InstanceTypeM6iLarge}}); err != nil {
		t.Fatal(err)
	}
	if _, err := w.as.CreateAutoScalingGroup(w.ctx(), &autoscaling.CreateAutoScalingGroupInput{AutoScalingGroupName: aws.String("b-asg"),
		LaunchTemplate: &astypes.LaunchTemplateSpecification{LaunchTemplateName: aws.String("b")},
		MinSize:        aws.Int32(0), MaxSize: aws.Int32(1), DesiredCapacity: aws.Int32(0), AvailabilityZones: []string{"us-east-1a"},
		Tags: []astypes.Tag{{Key: aws.String(cloud.TagGroup), Value: aws.String(b), PropagateAtLaunch: aws.Bool(true)}}}); err != nil {
		t.Fatal(err)
	}

	doc := printedPolicy(t, "--group", a, "--commands", strings.Join(policyCommands, ","), "--takeover", "--delete-superseded", "--keep", "1", "--on-rebalance=replace")
	if err := w.sim.SetInstancePolicy(instA, marshalPolicy(t, doc)); err != nil {
		t.Fatal(err)
	}
	clients, err := cloud.NewClients(w.ctx(), w.agentEnv(instA, nil), "")
	if err != nil {
		t.Fatal(err)
	}
	ctx := w.ctx()
	tags := func(id string, kv ...string) func() error {
		return func() error {
			var ts []ec2types.Tag
			for i := 0; i+1 < len(kv); i += 2 {
				ts = append(ts, ec2types.Tag{Key: aws.String(kv[i]), Value: aws.String(kv[i+1])})
			}
			_, err := clients.EC2.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{id}, Tags: ts})
			return err
		}
	}
	groupB := []ec2types.TagSpecification{{ResourceType: ec2types.ResourceTypeVolume, Tags: []ec2types.Tag{{Key: aws.String(cloud.TagGroup), Value: aws.String(a)}}}}
	snapSpec := []ec2types.TagSpecification{{ResourceType: ec2types.ResourceTypeSnapshot, Tags: []ec2types.Tag{{Key: aws.String(cloud.TagGroup), Value: aws.String(a)}}}}
	assocB := ""
	if out, err := w.ec2.DescribeAddresses(w.ctx(), &ec2.DescribeAddressesInput{AllocationIds: []string{eipB}}); err == nil && len(out.Addresses) == 1 {
		assocB = aws.ToString(out.Addresses[0].AssociationId)
	}

	for _, tc := range []struct {
		what   string
		action string // the IAM action refused
		call   func() error
	}{
		// Group b's resources.
		{"take b's Elastic IP", "ec2:AssociateAddress", func() error {
			_, err := clients.EC2.AssociateAddress(ctx, &ec2.AssociateAddressInput{AllocationId: aws.String(eipB), InstanceId: aws.String(instA), AllowReassociation: aws.Bool(true)})
			return err
		}},
		{"release b's Elastic IP from b", "ec2:DisassociateAddress", func() error {
			_, err := clients.EC2.DisassociateAddress(ctx, &ec2.DisassociateAddressInput{AssociationId: aws.String(assocB)})
			return err
		}},
		{"tag b's Elastic IP for a", "ec2:CreateTags", tags(eipB, cloud.TagGroup, a)},
		{"attach b's volume", "ec2:AttachVolume", func() error {
			_, err := clients.EC2.AttachVolume(ctx, &ec2.AttachVolumeInput{VolumeId: aws.String(spareB), InstanceId: aws.String(instA), Device: aws.String("/dev/sdg")})
			return err
		}},
		{"detach b's volume from b", "ec2:DetachVolume", func() error {
			_, err := clients.EC2.DetachVolume(ctx, &ec2.DetachVolumeInput{VolumeId: aws.String(volB), Force: aws.Bool(true)})
			return err
		}},
		{"delete b's superseded volume", "ec2:DeleteVolume", func() error {
			_, err := clients.EC2.DeleteVolume(ctx, &ec2.DeleteVolumeInput{VolumeId: aws.String(spareB)})
			return err
		}},
		{"tag b's volume superseded", "ec2:CreateTags", tags(volB, cloud.TagSuperseded, "true")},
		{"snapshot b's volume as a's", "ec2:CreateSnapshot", func() error {
			_, err := clients.EC2.CreateSnapshot(ctx, &ec2.CreateSnapshotInput{VolumeId: aws.String(volB), TagSpecifications: snapSpec})
			return err
		}},
		{"restore b's snapshot as a's volume", "ec2:CreateVolume", func() error {
			_, err := clients.EC2.CreateVolume(ctx, &ec2.CreateVolumeInput{AvailabilityZone: aws.String("us-east-1a"), SnapshotId: aws.String(snapB), TagSpecifications: groupB})
			return err
		}},
		{"delete b's snapshot", "ec2:DeleteSnapshot", func() error {
			_, err := clients.EC2.DeleteSnapshot(ctx, &ec2.DeleteSnapshotInput{SnapshotId: aws.String(snapB)})
			return err
		}},
		{"stop b's instance (takeover)", "ec2:StopInstances", func() error {
			_, err := clients.EC2.StopInstances(ctx, &ec2.StopInstancesInput{InstanceIds: []string{instB}})
			return err
		}},
		{"start b's instance (failover)", "ec2:StartInstances", func() error {
			_, err := clients.EC2.StartInstances(ctx, &ec2.StartInstancesInput{InstanceIds: []string{instB}})
			return err
		}},
		{"swap b's roles", "ec2:CreateTags", tags(instB, cloud.TagRole, failover.RoleStandby)},
		{"complete b's lifecycle hook", "autoscaling:CompleteLifecycleAction", func() error {
			_, err := clients.AutoScaling.CompleteLifecycleAction(ctx, &autoscaling.CompleteLifecycleActionInput{AutoScalingGroupName: aws.String("b-asg"),
				LifecycleHookName: aws.String(terminateHook), InstanceId: aws.String(instA), LifecycleActionResult: aws.String("CONTINUE")})
			return err
		}},
		{"heartbeat b's lifecycle hook", "autoscaling:RecordLifecycleActionHeartbeat", func() error {
			_, err := clients.AutoScaling.RecordLifecycleActionHeartbeat(ctx, &autoscaling.RecordLifecycleActionHeartbeatInput{AutoScalingGroupName: aws.String("b-asg"),
				LifecycleHookName: aws.String(terminateHook), InstanceId: aws.String(instA)})
			return err
		}},

		// Its own resources out of group a.
		{"untag its volume", "ec2:DeleteTags", func() error {
			_, err := clients.EC2.DeleteTags(ctx, &ec2.DeleteTagsInput{Resources: []string{volA}, Tags: []ec2types.Tag{{Key: aws.String(cloud.TagGroup)}}})
			return err
		}},
		{"remove every tag of its volume", "ec2:DeleteTags", func() error {
			_, err := clients.EC2.DeleteTags(ctx, &ec2.DeleteTagsInput{Resources: []string{volA}})
			return err
		}},
		{"untag its Elastic IP", "ec2:DeleteTags", func() error {
			_, err := clients.EC2.DeleteTags(ctx, &ec2.DeleteTagsInput{Resources: []string{eipA}, Tags: []ec2types.Tag{{Key: aws.String(cloud.TagGroup), Value: aws.String(a)}}})
			return err
		}},
		{"retag its volume for b", "ec2:CreateTags", tags(volA, cloud.TagGroup, b)},
		{"retag its volume for b along with the superseded tag", "ec2:CreateTags", tags(volA, cloud.TagSuperseded, "true", cloud.TagGroup, b)},
		{"retag its Elastic IP for b", "ec2:CreateTags", tags(eipA, cloud.TagGroup, b)},
		{"retag its snapshot for b", "ec2:CreateTags", tags(snapA, cloud.TagGroup, b)},
		{"retag itself for b", "ec2:CreateTags", tags(instA, cloud.TagGroup, b)},
		{"retag itself for b along with its role", "ec2:CreateTags", tags(instA, cloud.TagRole, failover.RolePrimary, cloud.TagGroup, b)},
		{"make a volume of b", "ec2:CreateVolume", func() error {
			_, err := clients.EC2.CreateVolume(ctx, &ec2.CreateVolumeInput{AvailabilityZone: aws.String("us-east-1a"), Size: aws.Int32(1),
				TagSpecifications: cloud.TagSpec(ec2types.ResourceTypeVolume, tagsOf(b))})
			return err
		}},
	} {
		err := tc.call()
		d := cloud.DeniedIn(err)
		switch {
		case err == nil:
			t.Errorf("%s: allowed", tc.what)
		case !cloud.IsDenied(err) || d == nil:
			t.Errorf("%s: %v, want a refusal", tc.what, err)
		case d.Actions[0] != tc.action && !contains(d.Actions, tc.action):
			t.Errorf("%s: refused as %v, want %s", tc.what, d.Actions, tc.action)
		}
	}

	// Nothing it was refused changed anything.
	if got := w.addressHolder(eipB); got != instB {
		t.Errorf("b's Elastic IP is on %q, want %s", got, instB)
	}
	vols, err := w.ec2.DescribeVolumes(w.ctx(), &ec2.DescribeVolumesInput{VolumeIds: []string{volA, volB, spareB}})
	if err != nil || len(vols.Volumes) != 3 {
		t.Fatalf("DescribeVolumes: %v (b's spare deleted?)", err)
	}
	for _, v := range vols.Volumes {
		want := map[string]string{volA: a, volB: b, spareB: b}[aws.ToString(v.VolumeId)]
		if g := tagOf(v.Tags, cloud.TagGroup); g != want {
			t.Errorf("%s: %s=%q, want %q", aws.ToString(v.VolumeId), cloud.TagGroup, g, want)
		}
		if aws.ToString(v.VolumeId) == volB && (len(v.Attachments) != 1 || aws.ToString(v.Attachments[0].InstanceId) != instB || tagOf(v.Tags, cloud.TagSuperseded) != "") {
			t.Errorf("b's volume changed: %+v", v)
		}
	}

	// What is a's it can use: the same kinds of call on a's resources pass.
	for _, tc := range []struct {
		what string
		call func() error
	}{
		{"take a's Elastic IP", func() error {
			_, err := clients.EC2.AssociateAddress(ctx, &ec2.AssociateAddressInput{AllocationId: aws.String(eipA), InstanceId: aws.String(instA)})
			return err
		}},
		{"tag a's volume superseded", tags(volA, cloud.TagSuperseded, "true")},
		{"swap its own role", tags(instA, cloud.TagRole, failover.RolePrimary)},
		{"snapshot a's volume", func() error {
			_, err := clients.EC2.CreateSnapshot(ctx, &ec2.CreateSnapshotInput{VolumeId: aws.String(volA), TagSpecifications: snapSpec})
			return err
		}},
		{"delete a's snapshot", func() error {
			_, err := clients.EC2.DeleteSnapshot(ctx, &ec2.DeleteSnapshotInput{SnapshotId: aws.String(snapA)})
			return err
		}},
		{"delete a's superseded volume", func() error {
			_, err := clients.EC2.DeleteVolume(ctx, &ec2.DeleteVolumeInput{VolumeId: aws.String(volA)})
			return err
		}},
	} {
		if err := tc.call(); err != nil {
			t.Errorf("%s: %v", tc.what, err)
		}
	}
}

// TestIAMOrphanSnapshotRefusedKeepsTheNewestData: the newest volume of the slot holds writes no snapshot
// has (its instance died without down), and the role may not snapshot it. up must not fall back to the
// older snapshot, as it does when EBS cannot snapshot in time: that restores older data over the newest
// writes for a permission an operator can add. It stops with exit 3 naming the action, and makes no
// volume.
func TestIAMOrphanSnapshotRefusedKeepsTheNewestData(t *testing.T) {
	t.Parallel()
	w := newTestRegion(t)
	w.allocateAddress(testGroup)
	old := w.createSlotVolume("us-east-1a", 1, nil)
	w.snapshot(old, 1, false, true)
	newest := w.createSlotVolume("us-east-1a", 2, nil)
	id := w.runInstance("us-east-1b", groupTags, true)
	doc := without(printedPolicy(t, "--group", testGroup, "--commands", "up"), scopeCreateSnapshots.sid, "ec2:CreateSnapshot")
	if err := w.sim.SetInstancePolicy(id, marshalPolicy(t, doc)); err != nil {
		t.Fatal(err)
	}
	w.sim.ResetCalls()
	res := w.runAgent(w.ctx(), id, nil, w.upArgs(id, "--no-mount")...)
	mustExit(t, res, fail.CodePrecondition, "handover up: not authorized to call ec2:CreateSnapshot")
	for _, c := range w.callsOf(id) {
		if c.Action == "CreateVolume" || c.Action == "CreateTags" {
			t.Errorf("up called %s after the snapshot of the newest volume was refused", c.Action)
		}
	}
	for _, v := range w.slotVolumes() {
		if aws.ToString(v.VolumeId) == newest && tagOf(v.Tags, cloud.TagSuperseded) != "" {
			t.Errorf("the newest volume %s was tagged superseded", newest)
		}
	}
}
