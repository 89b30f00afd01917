package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/handover/handover/cloud"
	"github.com/handover/handover/failover"
	"github.com/handover/handover/internal/fail"
	"github.com/handover/handover/sim"
	"github.com/handover/handover/sim/simtest"
)

// docInstanceID is the instance ID in the samples under testdata/; tests put a simulated instance's there.
const docInstanceID = "i-1234567890abcdef0"

// region is a simulated region with the standby pattern (a primary in us-east-1a holding group db's Elastic
// IP, a standby in us-east-1b) and the function's handler wired to it.
type region struct {
	t                       *testing.T
	sim                     *sim.Region
	ec2                     *ec2.Client
	h                       *handler
	logs                    *bytes.Buffer
	primary, standby, alloc string
}

func newRegion(t *testing.T) *region {
	t.Helper()
	r, err := sim.New(sim.Options{StateDir: filepath.Join(t.TempDir(), "sim"), Speed: 100, Seed: 1})
	if err != nil {
		t.Fatalf("sim.New: %v", err)
	}
	if err := r.Start("127.0.0.1:0"); err != nil {
		t.Fatalf("sim start: %v", err)
	}
	t.Cleanup(func() { _ = r.Close() })
	cfg := aws.Config{Region: "us-east-1", Credentials: credentials.NewStaticCredentialsProvider("AKIDLAMBDA", "secret", "")}
	w := &region{
		t:    t,
		sim:  r,
		ec2:  ec2.NewFromConfig(cfg, func(o *ec2.Options) { o.BaseEndpoint = aws.String(r.Endpoint()) }),
		logs: &bytes.Buffer{},
	}
	as := autoscaling.NewFromConfig(cfg, func(o *autoscaling.Options) { o.BaseEndpoint = aws.String(r.Endpoint()) })
	c, err := loadConfig(func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	c.MaxEventAge = 0 // the samples carry the documentation's dates
	w.h = &handler{cfg: c, clients: &cloud.Clients{EC2: w.ec2, AutoScaling: as}, log: slog.New(slog.NewTextHandler(w.logs, nil)), now: time.Now}
	t.Cleanup(func() {
		if t.Failed() || testing.Verbose() {
			t.Logf("function log:\n%s", w.logs)
		}
	})

	w.primary = w.run("us-east-1a", map[string]string{"handover:group": "db", "handover:role": "primary"})
	w.standby = w.run("us-east-1b", map[string]string{"handover:group": "db", "handover:role": "standby"})
	out, err := w.ec2.AllocateAddress(w.ctx(), &ec2.AllocateAddressInput{
		Domain: ec2types.DomainTypeVpc,
		TagSpecifications: []ec2types.TagSpecification{{ResourceType: ec2types.ResourceTypeElasticIp,
			Tags: []ec2types.Tag{{Key: aws.String("handover:group"), Value: aws.String("db")}}}},
	})
	if err != nil {
		t.Fatalf("AllocateAddress: %v", err)
	}
	w.alloc = aws.ToString(out.AllocationId)
	if _, err := w.ec2.AssociateAddress(w.ctx(), &ec2.AssociateAddressInput{AllocationId: out.AllocationId, InstanceId: aws.String(w.primary)}); err != nil {
		t.Fatalf("AssociateAddress: %v", err)
	}
	return w
}

func (w *region) ctx() context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	w.t.Cleanup(cancel)
	return ctx
}

func (w *region) run(az string, tags map[string]string) string {
	w.t.Helper()
	var ts []ec2types.Tag
	for k, v := range tags {
		ts = append(ts, ec2types.Tag{Key: aws.String(k), Value: aws.String(v)})
	}
	in := &ec2.RunInstancesInput{
		ImageId: aws.String("ami-0123456789abcdef0"), InstanceType: ec2types.InstanceTypeM6iLarge,
		MinCount: aws.Int32(1), MaxCount: aws.Int32(1),
		Placement: &ec2types.Placement{AvailabilityZone: aws.String(az)},
	}
	if len(ts) > 0 {
		in.TagSpecifications = []ec2types.TagSpecification{{ResourceType: ec2types.ResourceTypeInstance, Tags: ts}}
	}
	out, err := w.ec2.RunInstances(w.ctx(), in)
	if err != nil {
		w.t.Fatalf("RunInstances: %v", err)
	}
	id := aws.ToString(out.Instances[0].InstanceId)
	w.waitState(id, "running")
	return id
}

func (w *region) describe(id string) ec2types.Instance {
	w.t.Helper()
	out, err := w.ec2.DescribeInstances(w.ctx(), &ec2.DescribeInstancesInput{InstanceIds: []string{id}})
	if err != nil || len(out.Reservations) != 1 || len(out.Reservations[0].Instances) != 1 {
		w.t.Fatalf("DescribeInstances %s: %v", id, err)
	}
	return out.Reservations[0].Instances[0]
}

func (w *region) waitState(id, want string) {
	w.t.Helper()
	simtest.Eventually(w.t, time.Minute, id+" "+want, func() (bool, string) {
		got := string(w.describe(id).State.Name)
		return got == want, "state " + got
	})
}

func (w *region) stop(id string) {
	w.t.Helper()
	if _, err := w.ec2.StopInstances(w.ctx(), &ec2.StopInstancesInput{InstanceIds: []string{id}}); err != nil {
		w.t.Fatalf("StopInstances: %v", err)
	}
	w.waitState(id, "stopped")
}

func (w *region) terminate(id string) {
	w.t.Helper()
	if _, err := w.ec2.TerminateInstances(w.ctx(), &ec2.TerminateInstancesInput{InstanceIds: []string{id}}); err != nil {
		w.t.Fatalf("TerminateInstances: %v", err)
	}
	w.waitState(id, "terminated")
}

// waitHealthy waits until the simulator reports both status checks of id ok.
func (w *region) waitHealthy(id string) {
	w.t.Helper()
	simtest.Eventually(w.t, time.Minute, id+" passes its status checks", func() (bool, string) {
		out, err := w.ec2.DescribeInstanceStatus(w.ctx(), &ec2.DescribeInstanceStatusInput{InstanceIds: []string{id}})
		if err != nil || len(out.InstanceStatuses) != 1 {
			return false, fmt.Sprintf("DescribeInstanceStatus: %v %+v", err, out)
		}
		s := out.InstanceStatuses[0]
		return s.SystemStatus.Status == ec2types.SummaryStatusOk && s.InstanceStatus.Status == ec2types.SummaryStatusOk,
			fmt.Sprintf("system %s, instance %s", s.SystemStatus.Status, s.InstanceStatus.Status)
	})
}

func (w *region) holder() string {
	w.t.Helper()
	out, err := w.ec2.DescribeAddresses(w.ctx(), &ec2.DescribeAddressesInput{AllocationIds: []string{w.alloc}})
	if err != nil || len(out.Addresses) != 1 {
		w.t.Fatalf("DescribeAddresses: %v", err)
	}
	return aws.ToString(out.Addresses[0].InstanceId)
}

func (w *region) role(id string) string {
	w.t.Helper()
	for _, tag := range w.describe(id).Tags {
		if aws.ToString(tag.Key) == "handover:role" {
			return aws.ToString(tag.Value)
		}
	}
	return ""
}

// calls counts the simulator's logged calls of action since the last reset ("" counts every call).
func (w *region) calls(action string) int {
	n := 0
	for _, c := range w.sim.Calls() {
		if action == "" || c.Action == action {
			n++
		}
	}
	return n
}

// event is a sample from testdata/ about instance id.
func event(t *testing.T, name, id string) json.RawMessage {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return json.RawMessage(strings.ReplaceAll(string(b), docInstanceID, id))
}

func (w *region) handle(raw json.RawMessage) (Outcome, error) {
	w.t.Helper()
	return w.h.handle(w.ctx(), raw)
}

func TestAlarmStartsTheStoppedStandbyAndMovesTheAddress(t *testing.T) {
	t.Parallel()
	w := newRegion(t)
	w.stop(w.standby)
	// The primary is running with status checks ok as far as EC2 can tell (a hung service, a CPU pinned at
	// 100%): the alarm is what says it failed.
	w.waitHealthy(w.primary)
	w.sim.ResetCalls()

	out, err := w.handle(event(t, "alarm-action-metric.json", w.primary))
	if err != nil {
		t.Fatalf("handle: %v", err)
	}
	if out.Action != failover.Moved || out.Result == nil || !out.Result.Started {
		t.Fatalf("outcome %+v: want moved, with the standby started", out)
	}
	if string(w.describe(w.standby).State.Name) != "running" {
		t.Errorf("standby not running")
	}
	if got := w.holder(); got != w.standby {
		t.Errorf("address on %q, want the standby %s", got, w.standby)
	}
	if w.role(w.standby) != "primary" || w.role(w.primary) != "standby" {
		t.Errorf("roles not swapped (HANDOVER_SWAP_ROLES defaults to true): standby is %q, primary is %q", w.role(w.standby), w.role(w.primary))
	}
	if n := w.calls("AssociateAddress"); n != 1 {
		t.Errorf("AssociateAddress called %d times, want 1", n)
	}
}

func TestEC2TerminatedEventMovesTheAddress(t *testing.T) {
	t.Parallel()
	w := newRegion(t)
	w.terminate(w.primary) // EC2 disassociates the address of a terminated instance
	w.sim.ResetCalls()

	out, err := w.handle(event(t, "ec2-state-terminated.json", w.primary))
	if err != nil {
		t.Fatalf("handle: %v", err)
	}
	if out.Action != failover.Moved || w.holder() != w.standby {
		t.Fatalf("outcome %+v, address on %q: want moved to %s", out, w.holder(), w.standby)
	}
	if w.calls("StartInstances") != 0 {
		t.Errorf("started a standby that was running")
	}
}

func TestDuplicateAndOutOfOrderEventsMoveOnce(t *testing.T) {
	t.Parallel()
	for _, swap := range []bool{true, false} {
		t.Run(map[bool]string{true: "roles swapped", false: "roles kept"}[swap], func(t *testing.T) {
			w := newRegion(t)
			w.h.cfg.SwapRoles = swap
			w.stop(w.primary)
			w.sim.ResetCalls()

			alarm := event(t, "alarm-eventbridge-alarm.json", w.primary)
			stopped := event(t, "ec2-state-stopped.json", w.primary)
			running := event(t, "ec2-state-running.json", w.primary)
			first, err := w.handle(alarm)
			if err != nil || first.Action != failover.Moved {
				t.Fatalf("first delivery: %+v, %v", first, err)
			}
			// EventBridge delivers at least once, and the primary's own state changes race the alarm.
			for _, ev := range []json.RawMessage{alarm, stopped, alarm, running} {
				out, err := w.handle(ev)
				if err != nil {
					t.Fatalf("redelivery %s: %v", out.Event, err)
				}
				if out.Action == failover.Moved {
					t.Errorf("redelivery %s moved the address again", out.Event)
				}
			}
			if n := w.calls("AssociateAddress"); n != 1 {
				t.Errorf("AssociateAddress called %d times, want 1", n)
			}
			if got := w.holder(); got != w.standby {
				t.Errorf("address on %q, want %s", got, w.standby)
			}
		})
	}
}

func TestRunningEventForThePrimaryDoesNotMoveTheAddressBack(t *testing.T) {
	t.Parallel()
	w := newRegion(t)
	w.stop(w.primary)
	if out, err := w.handle(event(t, "ec2-state-stopped.json", w.primary)); err != nil || out.Action != failover.Moved {
		t.Fatalf("stopped event: %+v, %v", out, err)
	}
	// The operator starts the old primary again; its pending and running events must change nothing.
	if _, err := w.ec2.StartInstances(w.ctx(), &ec2.StartInstancesInput{InstanceIds: []string{w.primary}}); err != nil {
		t.Fatal(err)
	}
	w.waitState(w.primary, "running")
	w.sim.ResetCalls()
	out, err := w.handle(event(t, "ec2-state-running.json", w.primary))
	if err != nil || out.Action != actionIgnored {
		t.Fatalf("running event: %+v, %v", out, err)
	}
	if n := w.calls(""); n != 0 {
		t.Errorf("a running event made %d API calls", n)
	}
	if got := w.holder(); got != w.standby {
		t.Errorf("address moved back to %q", got)
	}
}

func TestAlarmOKEventDoesNothing(t *testing.T) {
	t.Parallel()
	w := newRegion(t)
	w.stop(w.primary)
	w.sim.ResetCalls()
	out, err := w.handle(event(t, "alarm-eventbridge-ok.json", w.primary))
	if err != nil || out.Action != actionIgnored || !strings.Contains(out.Reason, "the alarm is OK") {
		t.Fatalf("outcome %+v, %v: want ignored because the alarm is OK", out, err)
	}
	if n := w.calls(""); n != 0 {
		t.Errorf("an OK event made %d API calls", n)
	}
	if got := w.holder(); got != w.primary {
		t.Errorf("address moved to %q", got)
	}
}

func TestEventsAboutOtherInstancesAreIgnored(t *testing.T) {
	t.Parallel()
	w := newRegion(t)
	w.stop(w.primary)
	loner := w.run("us-east-1c", nil)
	other := w.run("us-east-1c", map[string]string{"handover:group": "web", "handover:role": "primary"})
	w.sim.ResetCalls()

	for _, tc := range []struct {
		name, event, id, reason string
		group                   string
	}{
		{"unknown instance", "ec2-state-terminated.json", "i-0000000000000dead", "does not exist", ""},
		{"instance in no group", "ec2-state-stopped.json", loner, "has no handover:group tag", ""},
		{"the standby itself", "ec2-state-stopped.json", w.standby, "not primary", ""},
		{"another group than the function's", "alarm-action-metric.json", other, "is in group web, not db", "db"},
		{"composite alarm", "alarm-action-composite.json", w.primary, "no metric with an InstanceId dimension", ""},
		{"unrelated event", "scheduled-event.json", w.primary, "not a CloudWatch alarm or EC2 state-change event", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w.h.cfg.Group = tc.group
			out, err := w.handle(event(t, tc.event, tc.id))
			if err != nil || out.Action != actionIgnored || !strings.Contains(out.Reason, tc.reason) {
				t.Errorf("outcome %+v, err %v: want ignored with %q", out, err, tc.reason)
			}
		})
	}
	w.h.cfg.Group = ""
	if n := w.calls("AssociateAddress") + w.calls("StartInstances") + w.calls("CreateTags"); n != 0 {
		t.Errorf("ignored events made %d mutating calls", n)
	}
	if got := w.holder(); got != w.primary {
		t.Errorf("address moved to %q", got)
	}
}

func TestStandbyTerminatedIsAnErrorThatSaysWhatToDo(t *testing.T) {
	t.Parallel()
	w := newRegion(t)
	w.terminate(w.standby)
	w.stop(w.primary)
	_, err := w.handle(event(t, "alarm-action-metric.json", w.primary))
	if err == nil {
		t.Fatal("no error: Lambda would report success and nobody would look")
	}
	want := "the standby of group db, " + w.standby + ", is terminated: launch a new standby"
	if !strings.Contains(err.Error(), want) || fail.Code(err) != fail.CodePrecondition {
		t.Errorf("error %q (exit %d), want %q (exit 3)", err, fail.Code(err), want)
	}
}

func TestLateStateEventForAHealthyPrimaryIsIgnored(t *testing.T) {
	t.Parallel()
	w := newRegion(t)
	// A stopped event delivered after the primary was started again: EC2 says it is healthy.
	w.waitHealthy(w.primary)
	w.sim.ResetCalls()
	out, err := w.handle(event(t, "ec2-state-stopped.json", w.primary))
	if err != nil || out.Action != actionIgnored || !strings.Contains(out.Reason, "stale event") {
		t.Fatalf("outcome %+v, %v: want ignored as stale", out, err)
	}
	if n := w.calls("AssociateAddress") + w.calls("StartInstances"); n != 0 {
		t.Errorf("made %d mutating calls", n)
	}
}

func TestDecodeSamples(t *testing.T) {
	t.Parallel()
	const id = "i-0abcdef1234567890"
	for _, tc := range []struct {
		file   string
		force  bool
		ignore string // "" when the event asks for a failover of id
	}{
		{"alarm-action-metric.json", true, ""},
		{"alarm-eventbridge-alarm.json", true, ""},
		{"alarm-eventbridge-ok.json", true, "the alarm is OK"},
		{"alarm-action-composite.json", true, "no metric with an InstanceId dimension"},
		{"ec2-state-terminated.json", false, ""},
		{"ec2-state-stopped.json", false, ""},
		{"ec2-state-running.json", false, `state "running" does not mean the instance failed`},
		{"scheduled-event.json", false, "not a CloudWatch alarm"},
	} {
		tr, err := decode(event(t, tc.file, id))
		if err != nil {
			t.Errorf("%s: %v", tc.file, err)
			continue
		}
		if !strings.Contains(tr.Ignore, tc.ignore) || (tc.ignore == "") != (tr.Ignore == "") {
			t.Errorf("%s: ignore %q, want %q", tc.file, tr.Ignore, tc.ignore)
		}
		if tc.ignore == "" && (tr.Failed != id || tr.Force != tc.force) {
			t.Errorf("%s: failed %q force %v, want %q %v", tc.file, tr.Failed, tr.Force, id, tc.force)
		}
		if tc.file != "scheduled-event.json" && tr.Time.IsZero() {
			t.Errorf("%s: no event time read", tc.file)
		}
	}
	if _, err := decode([]byte("not json")); err == nil {
		t.Error("decode accepted a non-JSON event")
	}
}

func TestStaleEventIsIgnoredBeforeAnyCall(t *testing.T) {
	t.Parallel()
	raw := event(t, "alarm-eventbridge-alarm.json", "i-0abcdef1234567890")
	tr, _ := decode(raw)
	var logs bytes.Buffer
	h := &handler{
		cfg:     config{MaxEventAge: 30 * time.Minute},
		clients: &cloud.Clients{}, // any AWS call would panic on the nil interfaces
		log:     slog.New(slog.NewTextHandler(&logs, nil)),
		now:     func() time.Time { return tr.Time.Add(31 * time.Minute) },
	}
	out, err := h.handle(context.Background(), raw)
	if err != nil || out.Action != actionIgnored || !strings.Contains(out.Reason, "older than HANDOVER_MAX_EVENT_AGE") {
		t.Errorf("outcome %+v, %v: want ignored as too old", out, err)
	}
}

func TestLoadConfig(t *testing.T) {
	t.Parallel()
	env := func(kv map[string]string) func(string) string { return func(k string) string { return kv[k] } }
	c, err := loadConfig(env(nil))
	if err != nil || !c.SwapRoles || c.WaitStatusOK || c.StartTimeout != 5*time.Minute || c.MaxEventAge != 30*time.Minute {
		t.Errorf("defaults: %+v, %v", c, err)
	}
	c, err = loadConfig(env(map[string]string{"HANDOVER_SWAP_ROLES": "false", "HANDOVER_MAX_EVENT_AGE": "0", "HANDOVER_GROUP": "db", "HANDOVER_LOG_LEVEL": "debug"}))
	if err != nil || c.SwapRoles || c.MaxEventAge != 0 || c.Group != "db" || c.LogLevel != slog.LevelDebug {
		t.Errorf("set: %+v, %v", c, err)
	}
	for k, v := range map[string]string{"HANDOVER_START_TIMEOUT": "0", "HANDOVER_WAIT_STATUS_OK": "yes please", "HANDOVER_LOG_LEVEL": "loud", "HANDOVER_STATUS_TIMEOUT": "-1m"} {
		if _, err := loadConfig(env(map[string]string{k: v})); err == nil || !strings.Contains(err.Error(), k) {
			t.Errorf("%s=%q: error %v, want one naming the variable", k, v, err)
		}
	}
}

func TestRedeliveryAfterTheOldPrimaryIsTerminatedIsHarmless(t *testing.T) {
	t.Parallel()
	w := newRegion(t)
	w.terminate(w.primary)
	terminated := event(t, "ec2-state-terminated.json", w.primary)
	if out, err := w.handle(terminated); err != nil || out.Action != failover.Moved {
		t.Fatalf("first delivery: %+v, %v", out, err)
	}
	// The terminated primary cannot be tagged standby, and the group has no standby left until an operator
	// launches one: a redelivery must still be a quiet no-op, not a "no standby" error.
	w.sim.ResetCalls()
	out, err := w.handle(terminated)
	if err != nil || out.Action != failover.NothingToDo {
		t.Fatalf("redelivery: %+v, %v: want nothing to do", out, err)
	}
	if n := w.calls("AssociateAddress") + w.calls("CreateTags"); n != 0 {
		t.Errorf("redelivery made %d mutating calls", n)
	}
}

func TestAnInterruptedRoleSwapIsFinishedByTheNextEvent(t *testing.T) {
	t.Parallel()
	w := newRegion(t)
	w.stop(w.primary)
	// A run moved the address and promoted the standby, then died before demoting the old primary.
	if _, err := w.ec2.AssociateAddress(w.ctx(), &ec2.AssociateAddressInput{AllocationId: aws.String(w.alloc), InstanceId: aws.String(w.standby), AllowReassociation: aws.Bool(true)}); err != nil {
		t.Fatal(err)
	}
	if _, err := w.ec2.CreateTags(w.ctx(), &ec2.CreateTagsInput{Resources: []string{w.standby}, Tags: []ec2types.Tag{{Key: aws.String("handover:role"), Value: aws.String("primary")}}}); err != nil {
		t.Fatal(err)
	}
	out, err := w.handle(event(t, "ec2-state-stopped.json", w.primary))
	if err != nil || out.Action != failover.NothingToDo || out.Result == nil || !out.Result.RolesSwapped {
		t.Fatalf("outcome %+v, %v: want nothing to do, roles swapped", out, err)
	}
	if w.role(w.primary) != "standby" || w.role(w.standby) != "primary" {
		t.Errorf("roles: old primary %q, old standby %q", w.role(w.primary), w.role(w.standby))
	}
}
