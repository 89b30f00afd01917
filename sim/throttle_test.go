package sim

import (
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// fakeClock drives the throttler's refills and IMDS token lifetimes
// (Options.IMDSClock), so that tests observe a refill or an expiry without
// sleeping.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// throttleOn switches throttling on with full buckets and a fake clock.
func throttleOn(r *Region) *fakeClock {
	r.SetThrottle(true)
	c := &fakeClock{t: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}
	r.cfgMu.Lock()
	th := r.throttle
	r.cfgMu.Unlock()
	th.mu.Lock()
	th.now = c.now
	th.mu.Unlock()
	return c
}

// leaveTokens sets the bucket of key to n tokens: a shortcut for draining
// the 1000-token resource buckets, which would take a thousand instances.
func leaveTokens(r *Region, key string, spec bucketSpec, n float64) {
	r.cfgMu.Lock()
	th := r.throttle
	r.cfgMu.Unlock()
	th.mu.Lock()
	defer th.mu.Unlock()
	th.bucketLocked(key, spec).tokens = n
}

// wantThrottled fails unless err is code with HTTP status.
func wantThrottled(t *testing.T, err error, code string, status int) {
	t.Helper()
	wantCode(t, err, code)
	var re *smithyhttp.ResponseError
	if !errors.As(err, &re) || re.HTTPStatusCode() != status {
		t.Fatalf("want HTTP %d, got %v", status, err)
	}
}

// drain calls fn until it is throttled and returns how many calls passed.
func drain(t *testing.T, limit int, fn func() error) (int, error) {
	t.Helper()
	for i := range limit {
		if err := fn(); err != nil {
			var ae smithy.APIError
			if errors.As(err, &ae) && (ae.ErrorCode() == "RequestLimitExceeded" || ae.ErrorCode() == "Throttling") {
				return i, err
			}
		}
	}
	t.Fatalf("not throttled after %d calls", limit)
	return 0, nil
}

func TestThrottlingRequestLimitExceeded(t *testing.T) {
	t.Parallel()
	r := startRegion(t, Options{Throttle: true})
	clock := throttleOn(r)
	c := ec2Client(r)
	ctx := ctxT(t)
	describe := func() error { _, err := c.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{}); return err }
	// Unfiltered, unpaginated DescribeVolumes: 50 tokens, 10/s.
	n, err := drain(t, 200, describe)
	if n != 50 {
		t.Fatalf("%d unfiltered DescribeVolumes passed, want 50", n)
	}
	wantThrottled(t, err, "RequestLimitExceeded", http.StatusServiceUnavailable)
	calls := r.Calls()
	if last := calls[len(calls)-1]; last.Code != "RequestLimitExceeded" || last.Action != "DescribeVolumes" {
		t.Fatalf("call log: %+v", last)
	}
	// A filtered or paginated call uses the action's larger bucket (100, 20/s).
	filtered := func() error {
		_, err := c.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{Filters: []ec2types.Filter{{Name: aws.String("status"), Values: []string{"available"}}}})
		return err
	}
	if n, _ := drain(t, 200, filtered); n != 100 {
		t.Fatalf("%d filtered DescribeVolumes passed, want 100", n)
	}
	if _, err := c.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{MaxResults: aws.Int32(5)}); err == nil {
		t.Fatal("paginated DescribeVolumes shares the drained bucket of filtered ones")
	}
	// Other actions have their own buckets; DescribeAvailabilityZones is not
	// on the page's unfiltered list, so it has 100 tokens.
	az := func() error {
		_, err := c.DescribeAvailabilityZones(ctx, &ec2.DescribeAvailabilityZonesInput{})
		return err
	}
	if n, _ := drain(t, 200, az); n != 100 {
		t.Fatalf("%d DescribeAvailabilityZones passed, want 100", n)
	}
	// Refill: 10 tokens/s for the unfiltered bucket.
	clock.advance(100 * time.Millisecond)
	if err := describe(); err != nil {
		t.Fatalf("after 100ms one token is back: %v", err)
	}
	wantThrottled(t, describe(), "RequestLimitExceeded", http.StatusServiceUnavailable)
	clock.advance(time.Hour)
	if n, _ := drain(t, 200, describe); n != 50 {
		t.Fatalf("a full refill gives 50 tokens, got %d", n)
	}
	r.SetThrottle(false)
	if err := describe(); err != nil {
		t.Fatal(err)
	}
}

func TestThrottlingMutatingAndUncategorizedBuckets(t *testing.T) {
	t.Parallel()
	r := startRegion(t, Options{})
	clock := throttleOn(r)
	c := ec2Client(r)
	ctx := ctxT(t)
	// Mutating actions: 50 tokens, 5/s. Throttling comes before validation,
	// so calls about a volume that does not exist spend tokens too.
	detach := func() error {
		_, err := c.DetachVolume(ctx, &ec2.DetachVolumeInput{VolumeId: aws.String("vol-0123456789abcdef0")})
		return err
	}
	n, err := drain(t, 200, detach)
	if n != 50 {
		t.Fatalf("%d DetachVolume passed, want 50", n)
	}
	wantThrottled(t, err, "RequestLimitExceeded", http.StatusServiceUnavailable)
	clock.advance(200 * time.Millisecond)
	wantCode(t, detach(), "InvalidVolume.NotFound")
	wantThrottled(t, detach(), "RequestLimitExceeded", http.StatusServiceUnavailable)

	// Uncategorized: RunInstances has a request bucket of 5, refilled 2/s.
	run := func() error {
		_, err := c.RunInstances(ctx, &ec2.RunInstancesInput{ImageId: aws.String("ami-12345678"), MinCount: aws.Int32(1), MaxCount: aws.Int32(1)})
		return err
	}
	n, err = drain(t, 20, run)
	if n != 5 {
		t.Fatalf("%d RunInstances passed, want 5", n)
	}
	wantThrottled(t, err, "RequestLimitExceeded", http.StatusServiceUnavailable)
	clock.advance(500 * time.Millisecond)
	if err := run(); err != nil {
		t.Fatalf("after 500ms one RunInstances token is back: %v", err)
	}
	// CreateTags: 100 tokens.
	tag := func() error {
		_, err := c.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{"vol-0123456789abcdef0"}, Tags: toTags(map[string]string{"k": "v"})})
		return err
	}
	if n, _ := drain(t, 300, tag); n != 100 {
		t.Fatalf("%d CreateTags passed, want 100", n)
	}
}

func TestThrottlingResourceBuckets(t *testing.T) {
	t.Parallel()
	r := startRegion(t, Options{})
	c := ec2Client(r)
	ctx := ctxT(t)
	out, err := c.RunInstances(ctx, &ec2.RunInstancesInput{ImageId: aws.String("ami-12345678"), MinCount: aws.Int32(2), MaxCount: aws.Int32(2)})
	if err != nil {
		t.Fatal(err)
	}
	a, b := *out.Instances[0].InstanceId, *out.Instances[1].InstanceId
	idle(t, r)
	clock := throttleOn(r)

	for _, tc := range []struct {
		action string
		call   func(ids ...string) error
		refill time.Duration // for one token
	}{
		{"RunInstances", func(ids ...string) error {
			_, err := c.RunInstances(ctx, &ec2.RunInstancesInput{ImageId: aws.String("ami-12345678"), MinCount: aws.Int32(1), MaxCount: aws.Int32(int32(len(ids)))})
			return err
		}, 500 * time.Millisecond},
		{"StartInstances", func(ids ...string) error {
			_, err := c.StartInstances(ctx, &ec2.StartInstancesInput{InstanceIds: ids})
			return err
		}, 500 * time.Millisecond},
		{"StopInstances", func(ids ...string) error {
			_, err := c.StopInstances(ctx, &ec2.StopInstancesInput{InstanceIds: ids})
			return err
		}, 50 * time.Millisecond},
		{"TerminateInstances", func(ids ...string) error {
			_, err := c.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: ids})
			return err
		}, 50 * time.Millisecond},
	} {
		t.Run(tc.action, func(t *testing.T) {
			spec := resourceBuckets[tc.action]
			if spec.capacity != 1000 {
				t.Fatalf("%s resource bucket holds %v, the page says 1000", tc.action, spec.capacity)
			}
			// One token left: a call for two instances is throttled, one for
			// one instance passes; then the bucket is empty until it refills.
			leaveTokens(r, tc.action+"/resource", spec, 1)
			wantThrottled(t, tc.call(a, b), "RequestLimitExceeded", http.StatusServiceUnavailable)
			if err := tc.call(a); err != nil {
				t.Fatalf("one instance with one token: %v", err)
			}
			wantThrottled(t, tc.call(b), "RequestLimitExceeded", http.StatusServiceUnavailable)
			clock.advance(tc.refill)
			if err := tc.call(b); err != nil {
				t.Fatalf("after %s one resource token is back: %v", tc.refill, err)
			}
		})
	}

	// Resource tokens pay for impacted instances: a call that fails gets them back.
	leaveTokens(r, "TerminateInstances/resource", resourceBuckets["TerminateInstances"], 2)
	_, err = c.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{"i-0123456789abcdef0", "i-0123456789abcdef1"}})
	wantCode(t, err, "InvalidInstanceID.NotFound")
	if _, err := c.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{a, b}}); err != nil {
		t.Fatalf("the failed call's resource tokens were not given back: %v", err)
	}
}

func TestThrottlingAutoScaling(t *testing.T) {
	t.Parallel()
	r := startRegion(t, Options{Throttle: true})
	clock := throttleOn(r)
	as := asgClient(r)
	ctx := ctxT(t)
	describe := func() error {
		_, err := as.DescribeAutoScalingGroups(ctx, &autoscaling.DescribeAutoScalingGroupsInput{})
		return err
	}
	n, err := drain(t, 100, describe)
	if n != int(asgBucket.capacity) {
		t.Fatalf("%d Auto Scaling calls passed, want %v", n, asgBucket.capacity)
	}
	wantThrottled(t, err, "Throttling", http.StatusBadRequest)
	// The SDK does not surface the fault type: read the wire.
	resp, err := http.PostForm(r.Endpoint(), url.Values{"Action": {"DescribeAutoScalingGroups"}, "Version": {"2011-01-01"}})
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "<Type>Sender</Type>") ||
		!strings.Contains(string(body), "<Code>Throttling</Code>") {
		t.Fatalf("want a 400 Sender Throttling error, got %d %s", resp.StatusCode, body)
	}
	// One bucket for every Auto Scaling action.
	_, err = as.DescribeLifecycleHooks(ctx, &autoscaling.DescribeLifecycleHooksInput{AutoScalingGroupName: aws.String("g")})
	wantThrottled(t, err, "Throttling", http.StatusBadRequest)
	// EC2 is not affected.
	if _, err := ec2Client(r).DescribeAvailabilityZones(ctx, &ec2.DescribeAvailabilityZonesInput{}); err != nil {
		t.Fatal(err)
	}
	clock.advance(time.Duration(float64(time.Second) / asgBucket.refill))
	if err := describe(); err != nil {
		t.Fatalf("after one refill interval: %v", err)
	}
	wantThrottled(t, describe(), "Throttling", http.StatusBadRequest)
}

func TestFaultInjection(t *testing.T) {
	t.Parallel()
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

func TestFaultInjectionAutoScalingCodes(t *testing.T) {
	t.Parallel()
	r := startRegion(t, Options{Faults: Faults{ErrorRate: map[string]float64{"DescribeAutoScalingGroups": 1}}})
	as := asgClient(r)
	ctx := ctxT(t)
	seen := map[string]bool{}
	for range 40 {
		_, err := as.DescribeAutoScalingGroups(ctx, &autoscaling.DescribeAutoScalingGroupsInput{})
		var ae smithy.APIError
		var re *smithyhttp.ResponseError
		if !errors.As(err, &ae) || !errors.As(err, &re) {
			t.Fatalf("want an injected API error, got %v", err)
		}
		switch code := ae.ErrorCode(); {
		case code == "Throttling" && re.HTTPStatusCode() == http.StatusBadRequest,
			code == "InternalFailure" && re.HTTPStatusCode() == http.StatusInternalServerError:
			seen[code] = true
		default:
			t.Fatalf("Auto Scaling answered an injected fault with %s %d", code, re.HTTPStatusCode())
		}
	}
	if len(seen) != 2 {
		t.Fatalf("40 faults drew only %v", seen)
	}
}

// ThrottleEC2Only keeps EC2's documented buckets and leaves out Auto Scaling's assumed one.
func TestThrottleEC2OnlyLeavesAutoScaling(t *testing.T) {
	t.Parallel()
	r := startRegion(t, Options{Throttle: true, ThrottleEC2Only: true})
	throttleOn(r)
	ctx := ctxT(t)
	as := asgClient(r)
	for i := 0; i < 3*int(asgBucket.capacity); i++ {
		if _, err := as.DescribeAutoScalingGroups(ctx, &autoscaling.DescribeAutoScalingGroupsInput{}); err != nil {
			t.Fatalf("Auto Scaling call %d: %v", i, err)
		}
	}
	c := ec2Client(r)
	n, err := drain(t, 200, func() error {
		_, err := c.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{})
		return err
	})
	if n != int(unfilteredBucket.capacity) {
		t.Fatalf("%d unfiltered DescribeVolumes passed, want %v", n, unfilteredBucket.capacity)
	}
	wantThrottled(t, err, "RequestLimitExceeded", http.StatusServiceUnavailable)
}

func TestRequestBucket(t *testing.T) {
	for _, tc := range []struct {
		action   string
		filtered bool
		name     string
		spec     bucketSpec
	}{
		{"DescribeVolumes", false, "DescribeVolumes/unfiltered", unfilteredBucket},
		{"DescribeVolumes", true, "DescribeVolumes", nonMutatingBucket},
		{"DescribeAddresses", false, "DescribeAddresses", nonMutatingBucket},
		{"AttachVolume", false, "AttachVolume", mutatingBucket},
		{"CreateVolume", false, "CreateVolume", uncategorized["CreateVolume"]},
	} {
		name, capacity, refill := RequestBucket(tc.action, tc.filtered)
		if name != tc.name || capacity != tc.spec.capacity || refill != tc.spec.refill {
			t.Errorf("RequestBucket(%s, filtered %v) = %s %v/%v, want %s %v/%v", tc.action, tc.filtered, name, capacity, refill, tc.name, tc.spec.capacity, tc.spec.refill)
		}
	}
}
