package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"

	"github.com/handover/handover/cloud"
	"github.com/handover/handover/failover"
	"github.com/handover/handover/internal/fail"
	"github.com/handover/handover/sim"
	"github.com/handover/handover/sim/simtest"
)

// failoverWorld is a simulated region with the standby pattern: a primary in us-east-1a holding the
// group's Elastic IP and a standby in us-east-1b.
type failoverWorld struct {
	*testRegion
	group, primary, standby, alloc string
}

func newFailoverWorld(t testing.TB) *failoverWorld {
	t.Helper()
	w := &failoverWorld{testRegion: newTestRegion(t), group: "db"}
	w.primary = w.runInstance("us-east-1a", map[string]string{cloud.TagGroup: w.group, cloud.TagRole: failover.RolePrimary}, true)
	w.standby = w.runInstance("us-east-1b", map[string]string{cloud.TagGroup: w.group, cloud.TagRole: failover.RoleStandby}, true)
	w.alloc = w.allocateAddress(w.group)
	if _, err := w.ec2.AssociateAddress(w.ctx(), &ec2.AssociateAddressInput{AllocationId: aws.String(w.alloc), InstanceId: aws.String(w.primary)}); err != nil {
		t.Fatalf("AssociateAddress: %v", err)
	}
	return w
}

func (w *failoverWorld) stop(id string) {
	w.t.Helper()
	if _, err := w.ec2.StopInstances(w.ctx(), &ec2.StopInstancesInput{InstanceIds: []string{id}}); err != nil {
		w.t.Fatalf("StopInstances %s: %v", id, err)
	}
	w.waitInstanceState(id, "stopped")
}

func (w *failoverWorld) terminate(id string) {
	w.t.Helper()
	if _, err := w.ec2.TerminateInstances(w.ctx(), &ec2.TerminateInstancesInput{InstanceIds: []string{id}}); err != nil {
		w.t.Fatalf("TerminateInstances %s: %v", id, err)
	}
	w.waitInstanceState(id, "terminated")
}

func (w *failoverWorld) state(id string) string {
	w.t.Helper()
	m, found, err := failover.DescribeMember(w.ctx(), w.ec2, id)
	if err != nil || !found {
		w.t.Fatalf("describe %s: found=%v err=%v", id, found, err)
	}
	return m.State
}

func (w *failoverWorld) role(id string) string {
	w.t.Helper()
	m, found, err := failover.DescribeMember(w.ctx(), w.ec2, id)
	if err != nil || !found {
		w.t.Fatalf("describe %s: found=%v err=%v", id, found, err)
	}
	return m.Role
}

// waitHealthy waits until both status checks of a running instance are ok (the simulator reports
// "initializing" for a short while after the instance runs).
func (w *failoverWorld) waitHealthy(id string) {
	w.t.Helper()
	simtest.Eventually(w.t, waitBound, id+" passes its status checks", func() (bool, string) {
		healthy, why, err := failover.JudgePrimary(w.ctx(), &cloud.Clients{EC2: w.ec2, AutoScaling: w.as}, id)
		return err == nil && healthy, fmt.Sprintf("healthy %v (%v), err %v", healthy, why, err)
	})
}

func (w *failoverWorld) failover(args ...string) agentResult {
	w.t.Helper()
	return w.runAgent(w.ctx(), w.standby, nil, append([]string{"failover"}, args...)...)
}

func failoverCalls(w *testRegion, action string) int {
	n := 0
	for _, a := range w.mutatingCalls() {
		if a == action {
			n++
		}
	}
	return n
}

func TestFailoverCLIStartsStoppedStandbyAndMovesAddress(t *testing.T) {
	t.Parallel()
	w := newFailoverWorld(t)
	w.stop(w.standby)
	w.stop(w.primary) // the primary failed: stopped, still holding the address
	if got := w.addressHolder(w.alloc); got != w.primary {
		t.Fatalf("setup: address on %q, want the stopped primary %s", got, w.primary)
	}
	w.sim.ResetCalls()

	res := w.failover("--group", w.group, "--wait-status-ok")
	if res.code != fail.CodeOK {
		t.Fatalf("failover exit %d, stderr:\n%s", res.code, res.stderr)
	}
	if got := w.state(w.standby); got != "running" {
		t.Errorf("standby is %s, want running", got)
	}
	if got := w.addressHolder(w.alloc); got != w.standby {
		t.Errorf("address on %q, want the standby %s", got, w.standby)
	}
	if !strings.Contains(res.stdout, "moved Elastic IP") || !strings.Contains(res.stdout, "started "+w.standby) {
		t.Errorf("stdout %q: want the move and the start reported", res.stdout)
	}
	if !strings.Contains(res.stderr, "status checks of "+w.standby) {
		t.Errorf("stderr does not show the wait for status checks:\n%s", res.stderr)
	}
	if n := failoverCalls(w.testRegion, "StartInstances"); n < 1 {
		t.Errorf("StartInstances called %d times", n)
	}
	if n := failoverCalls(w.testRegion, "AssociateAddress"); n != 1 {
		t.Errorf("AssociateAddress called %d times, want 1", n)
	}
	if w.role(w.standby) != failover.RoleStandby || w.role(w.primary) != failover.RolePrimary {
		t.Errorf("roles changed without --swap-roles")
	}

	// Rerun: the address is already on the running standby; nothing changes.
	w.sim.ResetCalls()
	res = w.failover("--group", w.group)
	if res.code != fail.CodeOK || !strings.Contains(res.stdout, "already on "+w.standby) {
		t.Fatalf("rerun: exit %d, stdout %q, stderr:\n%s", res.code, res.stdout, res.stderr)
	}
	if calls := w.mutatingCalls(); len(calls) != 0 {
		t.Errorf("rerun made mutating calls: %v", calls)
	}
}

func TestFailoverCLIRefusesHealthyPrimaryWithoutForce(t *testing.T) {
	t.Parallel()
	w := newFailoverWorld(t)
	w.waitHealthy(w.primary)
	w.sim.ResetCalls()

	res := w.failover("--group", w.group)
	if res.code != fail.CodePrecondition {
		t.Fatalf("exit %d, want %d; stderr:\n%s", res.code, fail.CodePrecondition, res.stderr)
	}
	if !strings.Contains(res.stderr, "healthy") || !strings.Contains(res.stderr, "--force") {
		t.Errorf("stderr should say the primary is healthy and how to override:\n%s", res.stderr)
	}
	if calls := w.mutatingCalls(); len(calls) != 0 {
		t.Errorf("a refused failover made mutating calls: %v", calls)
	}
	if got := w.addressHolder(w.alloc); got != w.primary {
		t.Errorf("address moved to %q", got)
	}

	res = w.failover("--group", w.group, "--force")
	if res.code != fail.CodeOK {
		t.Fatalf("--force: exit %d, stderr:\n%s", res.code, res.stderr)
	}
	if got := w.addressHolder(w.alloc); got != w.standby {
		t.Errorf("--force: address on %q, want %s", got, w.standby)
	}
}

func TestFailoverCLISwapRolesMakesTheNextFailoverGoBack(t *testing.T) {
	t.Parallel()
	w := newFailoverWorld(t)
	w.stop(w.primary)

	res := w.failover("--group", w.group, "--swap-roles")
	if res.code != fail.CodeOK || !strings.Contains(res.stdout, w.standby+" is now the primary") {
		t.Fatalf("exit %d, stdout %q, stderr:\n%s", res.code, res.stdout, res.stderr)
	}
	if w.role(w.standby) != failover.RolePrimary || w.role(w.primary) != failover.RoleStandby {
		t.Fatalf("roles: old standby %q, old primary %q; want swapped", w.role(w.standby), w.role(w.primary))
	}

	// An event about the old primary, now the standby, concerns nothing.
	res = w.failover("--from", w.primary)
	if res.code != fail.CodePrecondition || !strings.Contains(res.stderr, "only a primary is failed over from") {
		t.Errorf("--from old primary: exit %d, stderr:\n%s", res.code, res.stderr)
	}

	// The next failover targets the old primary: it is started, and the address goes back once the new
	// primary is not healthy any more.
	w.stop(w.standby)
	res = w.failover("--group", w.group, "--swap-roles")
	if res.code != fail.CodeOK {
		t.Fatalf("failover back: exit %d, stderr:\n%s", res.code, res.stderr)
	}
	if got := w.addressHolder(w.alloc); got != w.primary {
		t.Errorf("address on %q, want back on %s", got, w.primary)
	}
	if w.role(w.primary) != failover.RolePrimary || w.role(w.standby) != failover.RoleStandby {
		t.Errorf("roles not swapped back")
	}
}

func TestFailoverCLIDryRunPrintsThePlanAndChangesNothing(t *testing.T) {
	t.Parallel()
	w := newFailoverWorld(t)
	w.stop(w.standby)
	w.stop(w.primary)
	w.sim.ResetCalls()

	res := w.failover("--group", w.group, "--dry-run", "--swap-roles")
	if res.code != fail.CodeOK {
		t.Fatalf("exit %d, stderr:\n%s", res.code, res.stderr)
	}
	for _, want := range []string{"dry run", "start " + w.standby, "associate Elastic IP", "tag " + w.standby + " handover:role=primary", "tag " + w.primary + " handover:role=standby"} {
		if !strings.Contains(res.stdout, want) {
			t.Errorf("plan lacks %q:\n%s", want, res.stdout)
		}
	}
	if calls := w.mutatingCalls(); len(calls) != 0 {
		t.Errorf("dry run made mutating calls: %v", calls)
	}
	if w.state(w.standby) != "stopped" || w.addressHolder(w.alloc) != w.primary {
		t.Errorf("dry run changed the world")
	}
}

func TestFailoverCLIRefusesABadTarget(t *testing.T) {
	t.Parallel()
	w := newFailoverWorld(t)
	w.stop(w.primary)
	other := w.runInstance("us-east-1c", map[string]string{cloud.TagGroup: "web", cloud.TagRole: failover.RoleStandby}, true)
	untagged := w.runInstance("us-east-1c", nil, true)
	spare := w.runInstance("us-east-1c", map[string]string{cloud.TagGroup: w.group}, true)
	w.terminate(spare)
	w.sim.ResetCalls()

	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"target in another group", []string{"--group", w.group, "--to", other}, "is in group web, not db"},
		{"target without a group", []string{"--to", untagged}, "has no handover:group tag"},
		{"terminated target", []string{"--to", spare}, "is terminated"},
		{"unknown target", []string{"--to", "i-0000000000000dead"}, "does not exist"},
		{"unknown failed instance", []string{"--from", "i-0000000000000dead"}, "does not exist"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := w.failover(tc.args...)
			if res.code != fail.CodePrecondition || !strings.Contains(res.stderr, tc.want) {
				t.Errorf("exit %d (want %d), stderr %q (want %q)", res.code, fail.CodePrecondition, res.stderr, tc.want)
			}
		})
	}
	if calls := w.mutatingCalls(); len(calls) != 0 {
		t.Errorf("refusals made mutating calls: %v", calls)
	}
	if got := w.addressHolder(w.alloc); got != w.primary {
		t.Errorf("address moved to %q", got)
	}
}

func TestFailoverCLIStandbyTerminated(t *testing.T) {
	t.Parallel()
	w := newFailoverWorld(t)
	w.stop(w.primary)
	w.terminate(w.standby)
	w.sim.ResetCalls()

	res := w.failover("--group", w.group)
	if res.code != fail.CodePrecondition {
		t.Fatalf("exit %d, want %d; stderr:\n%s", res.code, fail.CodePrecondition, res.stderr)
	}
	want := "the standby of group db, " + w.standby + ", is terminated: launch a new standby"
	if !strings.Contains(res.stderr, want) {
		t.Errorf("stderr %q, want %q", res.stderr, want)
	}
	if calls := w.mutatingCalls(); len(calls) != 0 {
		t.Errorf("mutating calls: %v", calls)
	}
}

func TestFailoverCLIUsage(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "name the group"},
		{[]string{"--to", "web-1"}, "--to \"web-1\": want an instance ID"},
		{[]string{"--to", "i-0123456789abcdef0", "--from", "i-0123456789abcdef0"}, "the target must be another instance"},
		{[]string{"--group", "db", "--start-timeout", "0s"}, "must be positive"},
		{[]string{"--group", "d b"}, "--group \"d b\""},
	} {
		var stdout, stderr strings.Builder
		code := Main(context.Background(), append([]string{"failover"}, tc.args...), Env{Getenv: func(string) string { return "" }, Stdout: &stdout, Stderr: &stderr})
		if code != fail.CodeUsage || !strings.Contains(stderr.String(), tc.want) {
			t.Errorf("failover %v: exit %d, stderr %q; want exit %d and %q", tc.args, code, stderr.String(), fail.CodeUsage, tc.want)
		}
	}
}

func TestFailoverDecidesAgainAfterStartingTheTarget(t *testing.T) {
	t.Parallel()
	// Instances take 1 s to start here, long enough to change the world while the standby starts.
	w := &failoverWorld{testRegion: newTestRegion(t, func(o *sim.Options) { o.Delays.InstanceStart = 100 * time.Second }), group: "db"}
	w.primary = w.runInstance("us-east-1a", map[string]string{cloud.TagGroup: w.group, cloud.TagRole: failover.RolePrimary}, true)
	w.standby = w.runInstance("us-east-1b", map[string]string{cloud.TagGroup: w.group, cloud.TagRole: failover.RoleStandby}, true)
	other := w.runInstance("us-east-1c", nil, true)
	w.alloc = w.allocateAddress(w.group)
	if _, err := w.ec2.AssociateAddress(w.ctx(), &ec2.AssociateAddressInput{AllocationId: aws.String(w.alloc), InstanceId: aws.String(w.primary)}); err != nil {
		t.Fatal(err)
	}
	w.stop(w.standby)
	w.stop(w.primary)
	w.waitHealthy(other)

	type outcome struct {
		res failover.Result
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		res, err := failover.Run(w.ctx(), slog.New(slog.NewTextHandler(io.Discard, nil)), &cloud.Clients{EC2: w.ec2, AutoScaling: w.as}, failover.Request{Group: w.group})
		done <- outcome{res, err}
	}()
	// Once the standby is starting, the first decision (move: the primary is stopped) has been made. An
	// operator now puts the address on a healthy instance: the failover must not take it from there.
	w.waitInstanceState(w.standby, "pending")
	if _, err := w.ec2.AssociateAddress(w.ctx(), &ec2.AssociateAddressInput{AllocationId: aws.String(w.alloc), InstanceId: aws.String(other), AllowReassociation: aws.Bool(true)}); err != nil {
		t.Fatal(err)
	}
	o := <-done
	if !errors.Is(o.err, failover.ErrPrimaryHealthy) || ExitCode(o.err) != fail.CodePrecondition {
		t.Fatalf("err %v: want the healthy-holder refusal (exit 3)", o.err)
	}
	if !o.res.Started {
		t.Errorf("result does not report that the standby was started")
	}
	if got := w.addressHolder(w.alloc); got != other {
		t.Errorf("address on %q, want it left on %s", got, other)
	}
}
