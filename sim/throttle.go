package sim

import (
	"net/http"
	"sync"
	"time"
)

// EC2 throttles each API action with its own token bucket, per account and
// Region: a request takes one token, a bucket refills at a fixed rate up to
// its capacity, and an empty bucket answers RequestLimitExceeded (HTTP 503).
// The numbers below are those of "Request throttling for the Amazon EC2 API",
// https://docs.aws.amazon.com/ec2/latest/devguide/ec2-api-throttling.html
// (sections "Request token bucket sizes and refill rates" and "Resource token
// bucket sizes and refill rates"), for the actions the simulator implements:
//
//	request buckets                                  capacity  refill/s
//	non-mutating (Describe*, not listed below)          100       20
//	unfiltered and unpaginated DescribeInstances,
//	  DescribeInstanceStatus, DescribeSnapshots,
//	  DescribeVolumes                                    50       10
//	mutating (not listed below)                          50        5
//	uncategorized: RunInstances, StartInstances           5        2
//	               TerminateInstances                   100        5
//	               CreateTags, DeleteTags               100       10
//	               CreateVolume, DeleteVolume,
//	               CreateSnapshot, DeleteSnapshot       100        5
//
//	resource buckets (one token per instance)       capacity  refill/s
//	RunInstances, StartInstances                       1000        2
//	TerminateInstances, StopInstances                  1000       20
//
// None of the simulator's actions is in the page's "resource-intensive"
// category (50/5: security groups, key pairs, Spot requests, VPC peering).
// "Unfiltered and unpaginated" is read literally: a call without Filter.N,
// MaxResults and NextToken; an id list does not count as a filter.
// A call takes its request token first; when the resource bucket then holds
// fewer tokens than the instances the call names (RunInstances: MaxCount),
// the call is throttled and takes no resource token (the page does not say
// whether AWS refunds the request token; the simulator does not). Resource
// tokens pay for instances "impacted by the request": a call that fails
// afterwards (unknown instance, DryRun, injected fault) gets them back.
//
// Auto Scaling answers Throttling ("Rate exceeded", HTTP 400, Type Sender)
// from a single bucket shared by every Auto Scaling action ("all Amazon EC2
// Auto Scaling API calls have a single, shared API limit",
// https://repost.aws/knowledge-center/autoscaling-api-calls-throttled). AWS
// publishes no size or rate for it: asgBucket is an assumption, chosen
// conservative (smaller than any EC2 bucket the simulator uses besides
// RunInstances/StartInstances) so that clients meet throttling no later than
// they would on AWS.
type bucketSpec struct {
	capacity float64
	refill   float64
}

var (
	nonMutatingBucket = bucketSpec{100, 20}
	unfilteredBucket  = bucketSpec{50, 10}
	mutatingBucket    = bucketSpec{50, 5}
	asgBucket         = bucketSpec{20, 2} // assumption: AWS publishes no number
)

// unfilteredActions are the actions of the page's "unfiltered and
// unpaginated non-mutating actions" list that the simulator implements.
var unfilteredActions = map[string]bool{
	"DescribeInstances":      true,
	"DescribeInstanceStatus": true,
	"DescribeSnapshots":      true,
	"DescribeVolumes":        true,
}

// uncategorized are the page's "uncategorized actions" (own bucket sizes)
// that the simulator implements.
var uncategorized = map[string]bucketSpec{
	"RunInstances":       {5, 2},
	"StartInstances":     {5, 2},
	"TerminateInstances": {100, 5},
	"CreateTags":         {100, 10},
	"DeleteTags":         {100, 10},
	"CreateVolume":       {100, 5},
	"DeleteVolume":       {100, 5},
	"CreateSnapshot":     {100, 5},
	"DeleteSnapshot":     {100, 5},
}

// resourceBuckets are the page's resource token buckets: one token per
// instance the call acts on.
var resourceBuckets = map[string]bucketSpec{
	"RunInstances":       {1000, 2},
	"StartInstances":     {1000, 2},
	"TerminateInstances": {1000, 20},
	"StopInstances":      {1000, 20},
}

type bucket struct {
	spec   bucketSpec
	tokens float64
	last   time.Time
}

type throttler struct {
	mu      sync.Mutex
	buckets map[string]*bucket
	now     func() time.Time
	asg     bool // Auto Scaling's shared bucket too (Options.ThrottleEC2Only turns it off)
}

func newThrottler(asg bool) *throttler {
	return &throttler{buckets: map[string]*bucket{}, now: time.Now, asg: asg}
}

// RequestBucket is the request token bucket an EC2 call of action takes its token from: its capacity and
// its refill per second, and the bucket's name ("DescribeVolumes/unfiltered" for a Describe call of the
// page's unfiltered list made without Filter.N, MaxResults or NextToken). Benchmarks compute with it the
// least time a number of calls can take.
func RequestBucket(action string, filtered bool) (name string, capacity, refillPerSecond float64) {
	unfiltered := unfilteredActions[action] && !filtered
	spec := requestSpec(action, isMutating(action), unfiltered)
	name = action
	if unfiltered {
		name += "/unfiltered"
	}
	return name, spec.capacity, spec.refill
}

// requestSpec is the request bucket of an EC2 action.
func requestSpec(action string, mutating, unfiltered bool) bucketSpec {
	if s, ok := uncategorized[action]; ok {
		return s
	}
	switch {
	case mutating:
		return mutatingBucket
	case unfiltered:
		return unfilteredBucket
	default:
		return nonMutatingBucket
	}
}

// bucketLocked returns the bucket of key, refilled for the time since it was
// last used.
func (t *throttler) bucketLocked(key string, spec bucketSpec) *bucket {
	now := t.now()
	b := t.buckets[key]
	if b == nil {
		b = &bucket{spec: spec, tokens: spec.capacity, last: now}
		t.buckets[key] = b
	}
	b.tokens = min(b.spec.capacity, b.tokens+now.Sub(b.last).Seconds()*b.spec.refill)
	b.last = now
	return b
}

// give puts n tokens back into the bucket of key.
func (t *throttler) give(key string, spec bucketSpec, n float64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	b := t.bucketLocked(key, spec)
	b.tokens = min(b.spec.capacity, b.tokens+n)
}

// take takes n tokens from the bucket of key if it holds that many.
func (t *throttler) take(key string, spec bucketSpec, n float64) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	b := t.bucketLocked(key, spec)
	if b.tokens < n {
		return false
	}
	b.tokens -= n
	return true
}

func (t *throttler) allow(key string, spec bucketSpec) bool { return t.take(key, spec, 1) }

// throttled applies the buckets of action when throttling is on and
// returns the error of a throttled call. refund, when not nil, gives back
// the resource tokens the call took: the caller runs it if the call fails.
func (r *Region) throttled(action string, isASG, mutating bool, p params) (refund func(), _ *apiError) {
	r.cfgMu.Lock()
	t := r.throttle
	r.cfgMu.Unlock()
	if t == nil {
		return nil, nil
	}
	if isASG {
		if !t.asg {
			return nil, nil
		}
		if !t.allow("autoscaling", asgBucket) {
			return nil, badRequest("Throttling", "Rate exceeded")
		}
		return nil, nil
	}
	limited := errf(http.StatusServiceUnavailable, "RequestLimitExceeded", "Request limit exceeded.")
	unfiltered := unfilteredActions[action] && len(p.indexes("Filter")) == 0 && !p.has("MaxResults") && !p.has("NextToken")
	key := action
	if unfiltered {
		key += "/unfiltered"
	}
	if !t.allow(key, requestSpec(action, mutating, unfiltered)) {
		return nil, limited
	}
	spec, ok := resourceBuckets[action]
	if !ok {
		return nil, nil
	}
	n := len(p.list("InstanceId"))
	if action == "RunInstances" {
		n, _ = p.integer("MaxCount", 0)
	}
	if n <= 0 {
		return nil, nil
	}
	rkey := action + "/resource"
	if !t.take(rkey, spec, float64(n)) {
		return nil, limited
	}
	return func() { t.give(rkey, spec, float64(n)) }, nil
}
