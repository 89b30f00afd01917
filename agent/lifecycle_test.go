package agent

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	"github.com/handover/handover/internal/fail"
)

// denyDescribeLifecycleHooks is an Auto Scaling API whose role lacks autoscaling:DescribeLifecycleHooks.
type denyDescribeLifecycleHooks struct{ AutoScaling }

func (denyDescribeLifecycleHooks) DescribeLifecycleHooks(context.Context, *autoscaling.DescribeLifecycleHooksInput, ...func(*autoscaling.Options)) (*autoscaling.DescribeLifecycleHooksOutput, error) {
	return nil, errors.New("AccessDenied")
}

// TestLifecycleCompleteTellsWhyThereIsNoAction: CompleteLifecycleAction answers ValidationError for an
// action already completed and for a hook the group does not have; complete tells them apart with
// DescribeLifecycleHooks, and names all three causes when it cannot read the hooks.
func TestLifecycleCompleteTellsWhyThereIsNoAction(t *testing.T) {
	w := newTestRegion(t)
	id := w.launchGroup("orders-asg", nil)
	a := &lifecycleAction{as: w.as, log: testLogger(t), kind: launchHookKind, asgName: "orders-asg", hook: "launch", instanceID: id}
	if inactive, err := a.complete(w.ctx(), hookContinue); inactive != "" || err != nil {
		t.Fatalf("first complete: %q, %v; want it completed", inactive, err)
	}
	inactive, err := a.complete(w.ctx(), hookContinue)
	if err != nil || !strings.Contains(inactive, "already completed, or timed out; hook launch exists on group orders-asg") {
		t.Errorf("second complete: %q, %v; want already completed or timed out", inactive, err)
	}

	typo := *a
	typo.hook = "lanch"
	if _, err := typo.complete(w.ctx(), hookContinue); ExitCode(err) != fail.CodeUsage || !strings.Contains(err.Error(), "no hook named lanch on group orders-asg") {
		t.Errorf("complete with a wrong hook name: %v (exit %d), want exit 2 naming the hook", err, ExitCode(err))
	}

	denied := typo
	denied.as = denyDescribeLifecycleHooks{w.as}
	inactive, err = denied.complete(w.ctx(), hookContinue)
	if err != nil || !strings.Contains(inactive, "already completed, timed out, or no hook named lanch on group orders-asg") {
		t.Errorf("complete without DescribeLifecycleHooks: %q, %v; want the three causes", inactive, err)
	}
}
