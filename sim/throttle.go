package sim

import (
	"sync"
	"time"
)

// EC2 throttles each API action with its own token bucket, per account and
// Region: a request takes one token, a bucket refills at a fixed rate up to
// its capacity, and an empty bucket answers RequestLimitExceeded (HTTP 503).
// Sizes and refill rates per action category, from "Request throttling for
// the Amazon EC2 API",
// https://docs.aws.amazon.com/ec2/latest/devguide/ec2-api-throttling.html:
//
//	category                         capacity  refill/s
//	non-mutating (Describe*, ...)       100       20
//	unfiltered & unpaginated describe    50       10
//	mutating                             200        5
//	resource-intensive (RunInstances,
//	  StartInstances, ...)                50        5
//
// The resource token buckets of RunInstances/TerminateInstances/... (per
// instance, on top of the request buckets) are not modelled.
type bucketSpec struct {
	capacity float64
	refill   float64
}

var (
	nonMutatingBucket   = bucketSpec{100, 20}
	unfilteredBucket    = bucketSpec{50, 10}
	mutatingBucket      = bucketSpec{200, 5}
	resourceIntensiveBk = bucketSpec{50, 5}
)

// resourceIntensive are the actions the page lists in that category that
// the simulator implements.
var resourceIntensive = map[string]bool{
	"RunInstances":   true,
	"StartInstances": true,
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
}

func newThrottler() *throttler {
	return &throttler{buckets: map[string]*bucket{}, now: time.Now}
}

func specFor(action string, mutating, unfiltered bool) bucketSpec {
	switch {
	case resourceIntensive[action]:
		return resourceIntensiveBk
	case mutating:
		return mutatingBucket
	case unfiltered:
		return unfilteredBucket
	default:
		return nonMutatingBucket
	}
}

// allow takes a token from the bucket of key, refilling it for the time
// since the last request first.
func (t *throttler) allow(key string, spec bucketSpec) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	b := t.buckets[key]
	if b == nil {
		b = &bucket{spec: spec, tokens: spec.capacity, last: now}
		t.buckets[key] = b
	}
	b.tokens = min(b.spec.capacity, b.tokens+now.Sub(b.last).Seconds()*b.spec.refill)
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// allowThrottled applies the bucket of action when throttling is on. An
// unfiltered, unpaginated Describe has its own, smaller bucket.
func (r *Region) allowThrottled(action string, mutating bool, p params) bool {
	r.cfgMu.Lock()
	t := r.throttle
	r.cfgMu.Unlock()
	if t == nil {
		return true
	}
	unfiltered := !mutating && len(p.indexes("Filter")) == 0 && !p.has("MaxResults")
	key := action
	if unfiltered {
		key += "/unfiltered"
	}
	return t.allow(key, specFor(action, mutating, unfiltered))
}
