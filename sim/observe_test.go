package sim

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/handover/handover/sim/simtest"
)

// agentEC2 is an SDK client with an instance's credentials (as InstanceEnv makes them), retries off.
func agentEC2(r *Region, instanceID string) *ec2.Client {
	key := "AKID" + instanceID[:1] + instanceID[2:]
	return ec2.NewFromConfig(awsConfig(r, key), func(o *ec2.Options) { o.RetryMaxAttempts = 1 })
}

func addressCount(t *testing.T, r *Region) int {
	t.Helper()
	out, err := ec2Client(r).DescribeAddresses(ctxT(t), &ec2.DescribeAddressesInput{})
	if err != nil {
		t.Fatal(err)
	}
	return len(out.Addresses)
}

func codesOf(r *Region, action string) []string {
	var codes []string
	for _, c := range r.Calls() {
		if c.Action == action {
			codes = append(codes, c.Code)
		}
	}
	return codes
}

// TestObserveAssociationsAndDetaches: every association change is reported as it is made, with the
// instance the address was taken from and the instances whose public IP it is afterwards; a DetachVolume
// is reported with whether the device was mounted.
func TestObserveAssociationsAndDetaches(t *testing.T) {
	t.Parallel()
	r := startRegion(t, Options{})
	c := ec2Client(r)
	ctx := ctxT(t)
	var mu sync.Mutex
	var seen []Observation
	stop := r.Observe(func(o Observation) {
		mu.Lock()
		defer mu.Unlock()
		seen = append(seen, o)
	})
	defer stop()
	a, b := runInstance(t, r, "us-east-1a", nil), runInstance(t, r, "us-east-1a", nil)
	idle(t, r)
	alloc, err := c.AllocateAddress(ctx, &ec2.AllocateAddressInput{Domain: ec2types.DomainTypeVpc})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.AssociateAddress(ctx, &ec2.AssociateAddressInput{AllocationId: alloc.AllocationId, InstanceId: aws.String(a)}); err != nil {
		t.Fatal(err)
	}
	moved, err := c.AssociateAddress(ctx, &ec2.AssociateAddressInput{AllocationId: alloc.AllocationId, InstanceId: aws.String(b), AllowReassociation: aws.Bool(true)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.DisassociateAddress(ctx, &ec2.DisassociateAddressInput{AssociationId: moved.AssociationId}); err != nil {
		t.Fatal(err)
	}
	vol := createVolume(t, r, "us-east-1a", 1, nil)
	idle(t, r)
	if _, err := c.AttachVolume(ctx, &ec2.AttachVolumeInput{VolumeId: aws.String(vol), InstanceId: aws.String(a), Device: aws.String("/dev/sdf")}); err != nil {
		t.Fatal(err)
	}
	idle(t, r)
	if _, err := c.DetachVolume(ctx, &ec2.DetachVolumeInput{VolumeId: aws.String(vol)}); err != nil {
		t.Fatal(err)
	}
	stop()
	mu.Lock()
	defer mu.Unlock()
	var got []string
	for _, o := range seen {
		got = append(got, fmt.Sprintf("%s %s from=%s replaced=%s holders=%v mounted=%v", o.Kind, o.VolumeID, o.InstanceID, o.Replaced, o.Holders, o.Mounted))
	}
	want := []string{
		fmt.Sprintf("associate  from=%s replaced= holders=[%s] mounted=false", a, a),
		fmt.Sprintf("associate  from=%s replaced=%s holders=[%s] mounted=false", b, a, b),
		fmt.Sprintf("disassociate  from=%s replaced= holders=[] mounted=false", b),
		fmt.Sprintf("detach %s from=%s replaced= holders=[] mounted=false", vol, a),
	}
	if !slices.Equal(got, want) {
		t.Errorf("observations:\n%v\nwant\n%v", got, want)
	}
}

// TestHoldCalls: a call held before it is carried out has not happened while held, goes on when let go,
// and is dropped (not carried out) when its client goes away meanwhile; a call held after it is carried
// out has happened, and its client gets the answer when let go.
func TestHoldCalls(t *testing.T) {
	t.Parallel()
	t.Run("before", func(t *testing.T) {
		t.Parallel()
		r := startRegion(t, Options{})
		release := r.HoldCalls("AllocateAddress", false)
		done := make(chan error, 1)
		go func() {
			_, err := ec2Client(r).AllocateAddress(ctxT(t), &ec2.AllocateAddressInput{})
			done <- err
		}()
		if caller, err := r.WaitCall(ctxT(t), "AllocateAddress"); err != nil || caller != "AKIDTEST" {
			t.Fatalf("WaitCall: %q, %v", caller, err)
		}
		if n := addressCount(t, r); n != 0 {
			t.Fatalf("%d addresses while the call is held before it is carried out", n)
		}
		release()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if n := addressCount(t, r); n != 1 {
			t.Fatalf("%d addresses after the release, want 1", n)
		}
	})
	t.Run("before, client gone", func(t *testing.T) {
		t.Parallel()
		r := startRegion(t, Options{})
		release := r.HoldCalls("AllocateAddress", false)
		defer release()
		ctx, cancel := context.WithCancel(ctxT(t))
		done := make(chan error, 1)
		go func() {
			_, err := ec2Client(r).AllocateAddress(ctx, &ec2.AllocateAddressInput{})
			done <- err
		}()
		if _, err := r.WaitCall(ctxT(t), "AllocateAddress"); err != nil {
			t.Fatal(err)
		}
		cancel()
		if err := <-done; err == nil {
			t.Fatal("a cancelled call succeeded")
		}
		simtest.Eventually(t, waitBound, "the held call dropped", func() (bool, string) {
			codes := codesOf(r, "AllocateAddress")
			return slices.Equal(codes, []string{"ClientGone"}), fmt.Sprint(codes)
		})
		release()
		if n := addressCount(t, r); n != 0 {
			t.Fatalf("%d addresses: the call of a client that went away was carried out", n)
		}
	})
	t.Run("after", func(t *testing.T) {
		t.Parallel()
		r := startRegion(t, Options{})
		release := r.HoldCalls("AllocateAddress", true)
		done := make(chan error, 1)
		go func() {
			_, err := ec2Client(r).AllocateAddress(ctxT(t), &ec2.AllocateAddressInput{})
			done <- err
		}()
		if _, err := r.WaitCall(ctxT(t), "AllocateAddress"); err != nil {
			t.Fatal(err)
		}
		if n := addressCount(t, r); n != 1 {
			t.Fatalf("%d addresses while the answer is held, want the one made", n)
		}
		select {
		case err := <-done:
			t.Fatalf("the client got its answer while it was held: %v", err)
		default:
		}
		release()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	})
}

// TestFaultsSlowDropAfterAgentsOnly: a slow call is carried out before it is answered; a call dropped
// after is carried out although its client saw only a broken connection; with AgentsOnly the faults hit
// instances' calls and not an admin's.
func TestFaultsSlowDropAfterAgentsOnly(t *testing.T) {
	t.Parallel()
	r := startRegion(t, Options{})
	admin := ec2Client(r)
	ctx := ctxT(t)
	inst := runInstance(t, r, "us-east-1a", nil)
	agent := agentEC2(r, inst)

	r.SetFaults(Faults{SlowRate: 1, SlowLatency: time.Minute, AgentsOnly: true})
	slowCtx, cancelSlow := context.WithCancel(ctx)
	defer cancelSlow()
	done := make(chan error, 1)
	go func() {
		_, err := agent.AllocateAddress(slowCtx, &ec2.AllocateAddressInput{})
		done <- err
	}()
	simtest.Eventually(t, waitBound, "the slow call's address visible to an admin", func() (bool, string) {
		n := addressCount(t, r)
		return n == 1, fmt.Sprintf("%d addresses", n)
	})
	select {
	case err := <-done:
		t.Fatalf("the slow call was answered before its minute: %v", err)
	default:
	}
	cancelSlow()
	<-done

	r.SetFaults(Faults{DropAfterRate: 1, AgentsOnly: true})
	if _, err := agent.AllocateAddress(ctx, &ec2.AllocateAddressInput{}); err == nil {
		t.Fatal("a call whose answer was dropped succeeded")
	}
	if n := addressCount(t, r); n != 2 {
		t.Fatalf("%d addresses, want the dropped call's too", n)
	}
	if codes := codesOf(r, "AllocateAddress"); !slices.Contains(codes, "ResponseDropped") {
		t.Errorf("call log codes %q, want a ResponseDropped", codes)
	}

	r.SetFaults(Faults{ErrorRate: map[string]float64{"*": 1}, AgentsOnly: true})
	if _, err := admin.DescribeAddresses(ctx, &ec2.DescribeAddressesInput{}); err != nil {
		t.Errorf("an admin's call was hit by AgentsOnly faults: %v", err)
	}
	if _, err := agent.DescribeAddresses(ctx, &ec2.DescribeAddressesInput{}); err == nil {
		t.Error("an instance's call escaped ErrorRate 1")
	}
}
