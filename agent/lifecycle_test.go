package agent

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	"github.com/handover/handover/cloud"
	"github.com/handover/handover/internal/fail"
)

// denyDescribeLifecycleHooks is an Auto Scaling API whose role lacks autoscaling:DescribeLifecycleHooks.
type denyDescribeLifecycleHooks struct{ cloud.AutoScaling }

func (denyDescribeLifecycleHooks) DescribeLifecycleHooks(context.Context, *autoscaling.DescribeLifecycleHooksInput, ...func(*autoscaling.Options)) (*autoscaling.DescribeLifecycleHooksOutput, error) {
	return nil, errors.New("AccessDenied")
}

// TestLifecycleCompleteTellsWhyThereIsNoAction: CompleteLifecycleAction answers ValidationError for an
// action already completed and for a hook the group does not have; complete tells them apart with
// DescribeLifecycleHooks, and names all three causes when it cannot read the hooks.
func TestLifecycleCompleteTellsWhyThereIsNoAction(t *testing.T) {
	t.Parallel()
	w := newTestRegion(t)
	id := w.launchGroup("orders-asg", nil)
	a := &cloud.LifecycleAction{As: w.as, Log: testLogger(t), Kind: cloud.LaunchHookKind, AsgName: "orders-asg", Hook: "launch", InstanceID: id}
	if inactive, err := a.Complete(w.ctx(), cloud.HookContinue); inactive != "" || err != nil {
		t.Fatalf("first complete: %q, %v; want it completed", inactive, err)
	}
	inactive, err := a.Complete(w.ctx(), cloud.HookContinue)
	if err != nil || !strings.Contains(inactive, "already completed, or timed out; hook launch exists on group orders-asg") {
		t.Errorf("second complete: %q, %v; want already completed or timed out", inactive, err)
	}

	typo := *a
	typo.Hook = "lanch"
	if _, err := typo.Complete(w.ctx(), cloud.HookContinue); ExitCode(err) != fail.CodeUsage || !strings.Contains(err.Error(), "no hook named lanch on group orders-asg") {
		t.Errorf("complete with a wrong hook name: %v (exit %d), want exit 2 naming the hook", err, ExitCode(err))
	}

	denied := typo
	denied.As = denyDescribeLifecycleHooks{w.as}
	inactive, err = denied.Complete(w.ctx(), cloud.HookContinue)
	if err != nil || !strings.Contains(inactive, "already completed, timed out, or no hook named lanch on group orders-asg") {
		t.Errorf("complete without DescribeLifecycleHooks: %q, %v; want the three causes", inactive, err)
	}
}
