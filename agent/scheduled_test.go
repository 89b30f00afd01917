package agent

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"

	"github.com/handover/handover/imds"
	"github.com/handover/handover/internal/fail"
	"github.com/handover/handover/sim"
)

type fakeEvents []imds.ScheduledEvent

func (f fakeEvents) ScheduledEvents(context.Context) ([]imds.ScheduledEvent, error) { return f, nil }

// TestScheduledMonitorActsOnlyOnStopAndRetirementInTime: the monitor reports an instance-stop or
// instance-retirement once --replace-before of its NotBefore has come (or when it is overdue), never a
// reboot or maintenance, nor a completed or canceled event.
func TestScheduledMonitorActsOnlyOnStopAndRetirementInTime(t *testing.T) {
	t.Parallel()
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	ev := func(code, state string, in time.Duration) imds.ScheduledEvent {
		return imds.ScheduledEvent{Code: code, State: state, EventID: "instance-event-" + code, NotBefore: now.Add(in)}
	}
	for _, tc := range []struct {
		name   string
		events fakeEvents
		want   string     // event key of the notice, "" for none
		codes  eventCodes // --replace-for; nil: the default
	}{
		{"none", nil, "", nil},
		{"a retirement inside the lead time", fakeEvents{ev(imds.EventInstanceRetirement, "active", 30*time.Minute)}, "scheduled instance-event-instance-retirement", nil},
		{"a stop inside the lead time", fakeEvents{ev(imds.EventInstanceStop, "active", 59*time.Minute)}, "scheduled instance-event-instance-stop", nil},
		{"a retirement further off than the lead time", fakeEvents{ev(imds.EventInstanceRetirement, "active", 2*time.Hour)}, "", nil},
		{"an overdue retirement still active", fakeEvents{ev(imds.EventInstanceRetirement, "active", -time.Hour)}, "scheduled instance-event-instance-retirement", nil},
		{"a canceled retirement", fakeEvents{ev(imds.EventInstanceRetirement, "canceled", 10*time.Minute)}, "", nil},
		{"a completed stop", fakeEvents{ev(imds.EventInstanceStop, "completed", -10*time.Minute)}, "", nil},
		{"reboots and maintenance keep the instance", fakeEvents{
			ev(imds.EventSystemReboot, "active", time.Minute), ev(imds.EventInstanceReboot, "active", time.Minute), ev(imds.EventSystemMaintenance, "active", time.Minute),
		}, "", nil},
		{"--replace-for system-reboot: a system reboot inside the lead time", fakeEvents{ev(imds.EventSystemReboot, "active", time.Minute)},
			"scheduled instance-event-system-reboot", eventCodes{imds.EventSystemReboot: true}},
		{"--replace-for system-reboot: a retirement no longer listed", fakeEvents{ev(imds.EventInstanceRetirement, "active", time.Minute)},
			"", eventCodes{imds.EventSystemReboot: true}},
	} {
		m := scheduledMonitor{md: tc.events, before: time.Hour, codes: tc.codes, now: func() time.Time { return now }}
		st, n, err := m.observe(context.Background())
		got := ""
		if n != nil {
			got = n.Occ.Key
			if n.response() != runReplaceEvent {
				t.Errorf("%s: response %s, want %s", tc.name, n.response(), runReplaceEvent)
			}
		}
		if err != nil || got != tc.want || st == "" {
			t.Errorf("%s: notice %q (state %q, err %v), want %q", tc.name, got, st, err, tc.want)
		}
	}
}

// TestWatchReplaceBeforeValues: --replace-before takes a duration or off; anything else is a usage error
// naming it.
func TestWatchReplaceBeforeValues(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		want leadTime
		bad  bool
	}{
		{want: defaultReplaceBefore},
		{args: []string{"--replace-before", "30m"}, want: leadTime(30 * time.Minute)},
		{args: []string{"--replace-before", "off"}, want: leadTimeOff},
		{args: []string{"--replace-before", "0s"}, want: 0},
		{args: []string{"--replace-before", "soon"}, bad: true},
		{args: []string{"--replace-before", "-1h"}, bad: true},
	} {
		res := validateWatch(t, tc.args)
		switch {
		case tc.bad && (res.err == nil || fail.Code(res.err) != fail.CodeUsage):
			t.Errorf("%v: %v, want a usage error", tc.args, res.err)
		case !tc.bad && (res.err != nil || res.cfg.ReplaceBefore != tc.want):
			t.Errorf("%v: %v %v, want %v", tc.args, res.cfg.ReplaceBefore, res.err, tc.want)
		}
	}
}

// TestWatchReplaceForValues: --replace-for takes a list of scheduled event codes (default stop and
// retirement); an empty list or a code EC2 does not announce is a usage error naming it.
func TestWatchReplaceForValues(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		want string // the list as the flag prints it
		bad  string // in the usage error
	}{
		{want: "instance-stop,instance-retirement"},
		{args: []string{"--replace-for", "instance-retirement, System-Reboot"}, want: "instance-retirement,system-reboot"},
		{args: []string{"--replace-for", "system-maintenance"}, want: "system-maintenance"},
		{args: []string{"--replace-for", ""}, bad: "--replace-before off"},
		{args: []string{"--replace-for", "instance-stop,reboot"}, bad: `"reboot" is not a scheduled event code`},
	} {
		res := validateWatch(t, tc.args)
		switch {
		case tc.bad != "" && (res.err == nil || fail.Code(res.err) != fail.CodeUsage || !strings.Contains(res.err.Error(), tc.bad) || !strings.Contains(res.err.Error(), "replace-for")):
			t.Errorf("%v: %v, want a usage error naming --replace-for with %q", tc.args, res.err, tc.bad)
		case tc.bad == "" && (res.err != nil || res.cfg.ReplaceFor.String() != tc.want):
			t.Errorf("%v: %q %v, want %q", tc.args, res.cfg.ReplaceFor.String(), res.err, tc.want)
		}
	}
}

type watchValidation struct {
	cfg watchConfig
	err error
}

func validateWatch(t *testing.T, args []string) watchValidation {
	t.Helper()
	var c watchConfig
	f := newFlags("watch", mapEnv(nil), io.Discard, time.Minute)
	f.dryRun()
	c.register(f)
	err := f.parse(args)
	if err == nil {
		err = f.check(c.validate)
	}
	return watchValidation{cfg: c, err: err}
}

// TestScheduledRetirementHandsOverBeforeItsTime: EC2 schedules the instance's retirement two hours ahead;
// watch (--replace-before 3h) asks the group at once for a replacement without decrementing its desired
// capacity, the termination hook's hand-over runs (down's snapshot), and the replacement comes up with the
// data, all before the retirement's NotBefore.
func TestScheduledRetirementHandsOverBeforeItsTime(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	w := newDownWorld(t)
	w.unmountOnCleanup()
	alloc := w.allocateAddress(w.group)
	asgName, old := w.autoScalingGroup(300)
	if res := w.runAgent(w.ctx(), old, nil, w.upArgs(old)...); res.code != fail.CodeOK {
		t.Fatalf("up on %s: exit %d\n%s", old, res.code, res.stderr)
	}
	data := w.writeData(w.mountPoint(old), "orders.db", 1<<20)
	watch := w.startAgent(old, "watch", "--volume", "data:/dev/sdf:"+w.mountPoint(old), "--pre-stop", "true",
		"--terminate-hook", terminateHook, "--heartbeat-interval", "100ms", "--state-file", filepath.Join(w.dir, "watch.json"),
		"--poll-interval", "50ms", "--replace-before", "3h")
	watch.waitLog(t, "watching instance metadata")

	notBefore := time.Now().Add(2 * time.Hour)
	if _, err := w.sim.ScheduleEvent(old, sim.ScheduledEvent{Code: imds.EventInstanceRetirement, NotBefore: notBefore}); err != nil {
		t.Fatal(err)
	}
	watch.waitLog(t, "scheduled event: asking the group to replace this instance before it")
	watch.waitLog(t, "hand-over done for this event")
	repl := w.replacementOf(asgName, old)
	w.waitInstanceState(repl, "running")
	res := w.runAgent(w.ctx(), repl, nil, w.upArgs(repl)...)
	if res.code != fail.CodeOK {
		t.Fatalf("up on the replacement: exit %d\n%s", res.code, res.stderr)
	}
	watch.stop(t)

	calls := w.callsBy("TerminateInstanceInAutoScalingGroup", old)
	if len(calls) != 1 || !calls[0].Time.Before(notBefore) {
		t.Fatalf("TerminateInstanceInAutoScalingGroup calls by %s: %+v, want one before %s", old, calls, notBefore)
	}
	if i, j := w.callIndex("TerminateInstanceInAutoScalingGroup", old), w.callIndex("CreateSnapshot", old); j < i {
		t.Errorf("down's snapshot (call %d) came before the replacement request (call %d)", j, i)
	}
	// ShouldDecrementDesiredCapacity=false: the group keeps one instance and launched the replacement.
	out, err := w.as.DescribeAutoScalingGroups(w.ctx(), &autoscaling.DescribeAutoScalingGroupsInput{AutoScalingGroupNames: []string{asgName}})
	if err != nil || len(out.AutoScalingGroups) != 1 || aws.ToInt32(out.AutoScalingGroups[0].DesiredCapacity) != 1 {
		t.Errorf("the group after the request: %+v %v, want desired capacity 1", out, err)
	}
	got, err := os.ReadFile(filepath.Join(w.mountPoint(repl), "orders.db"))
	if err != nil || !bytes.Equal(got, data) {
		t.Errorf("the data on the replacement differs (err %v)", err)
	}
	if h := w.addressHolder(alloc); h != repl {
		t.Errorf("address on %q, want the replacement %s", h, repl)
	}
}
