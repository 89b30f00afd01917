package sim

import (
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/ec2"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

func TestThrottlingRequestLimitExceeded(t *testing.T) {
	r := startRegion(t, Options{Throttle: true})
	c := ec2Client(r)
	ctx := ctxT(t)
	var throttled error
	// The unfiltered DescribeVolumes bucket holds 50 tokens and refills 10/s.
	for range 80 {
		if _, err := c.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{}); err != nil {
			throttled = err
			break
		}
	}
	wantCode(t, throttled, "RequestLimitExceeded")
	var re *smithyhttp.ResponseError
	if !errors.As(throttled, &re) || re.HTTPStatusCode() != http.StatusServiceUnavailable {
		t.Fatalf("want 503, got %v", throttled)
	}
	// Other actions have their own buckets.
	if _, err := c.DescribeAvailabilityZones(ctx, &ec2.DescribeAvailabilityZonesInput{}); err != nil {
		t.Fatal(err)
	}
	calls := r.Calls()
	if last := calls[len(calls)-2]; last.Code != "RequestLimitExceeded" {
		t.Fatalf("call log: %+v", last)
	}
	r.SetThrottle(false)
	if _, err := c.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{}); err != nil {
		t.Fatal(err)
	}
}

func TestFaultInjection(t *testing.T) {
	r := startRegion(t, Options{Faults: Faults{ErrorRate: map[string]float64{"DescribeVolumes": 1}}})
	c := ec2Client(r)
	ctx := ctxT(t)
	_, err := c.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{})
	var re *smithyhttp.ResponseError
	if !errors.As(err, &re) || (re.HTTPStatusCode() != 503 && re.HTTPStatusCode() != 500) {
		t.Fatalf("want an injected 500/503, got %v", err)
	}
	if _, err := c.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{}); err != nil {
		t.Fatalf("other actions are not affected: %v", err)
	}
	r.SetFaults(Faults{DropRate: 1})
	if _, err := c.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{}); err == nil {
		t.Fatal("dropped connection should fail")
	}
	r.SetFaults(Faults{Latency: 100 * time.Millisecond})
	start := time.Now()
	if _, err := c.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{}); err != nil {
		t.Fatal(err)
	}
	if time.Since(start) < 100*time.Millisecond {
		t.Fatal("latency not applied")
	}
	// With the SDK's standard retryer, injected errors are retried away.
	r.SetFaults(Faults{ErrorRate: map[string]float64{"*": 0.3}})
	retrying := ec2.NewFromConfig(awsConfig(r, "AKIDTEST"), func(o *ec2.Options) { o.RetryMaxAttempts = 10 })
	for range 10 {
		if _, err := retrying.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{}); err != nil {
			t.Fatal(err)
		}
	}
}
