package sim

import (
	"fmt"
	"math"
	"time"
)

// Volume initialization (https://docs.aws.amazon.com/ebs/latest/userguide/initalize-volume.html): a volume
// created from a snapshot loads its blocks from S3 after creation, "increased I/O latency and decreased
// performance ... Full volume performance is achieved only once all storage blocks have been downloaded";
// an empty volume needs none. CreateVolume's VolumeInitializationRate (the Amazon EBS Provisioned Rate for
// Volume Initialization, 100 to 300 MiB/s) makes that predictable, and a snapshot enabled for fast
// snapshot restore in the volume's zone gives a volume that is fully initialized at creation, unless a
// rate is given too ("the volume will be initialized at the specified rate instead of fast snapshot
// restore", https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_CreateVolume.html).
//
// The sim loads a restored volume at its rate, or at Options.InitializationRate (AWS does not document
// the default rate: it "fluctuates"), over the snapshot's whole size (AWS loads the blocks written), from
// the moment the volume is available; the rate's time is divided by Speed like every delay.
// DescribeVolumeStatus reports it (InitializationStatusDetails); the change to 100% is a timer a test can
// hold (VolumeInitialize), and is not a transition WaitIdle waits for: an hour of lazy loading blocks
// nothing.

// Provisioned Rate for Volume Initialization bounds, MiB/s.
const (
	minInitializationRate = 100
	maxInitializationRate = 300
	// defaultInitializationRate is Options.InitializationRate's default, MiB/s.
	defaultInitializationRate = 64
)

// Initialization types, as InitializationStatusDetails names them.
const (
	initDefault     = "default"
	initProvisioned = "provisioned-rate"
)

// volumeInit is a restored volume's initialization.
type volumeInit struct {
	Type     string        `json:"type"`           // default, provisioned-rate
	Rate     int           `json:"rate,omitempty"` // VolumeInitializationRate, MiB/s; 0 for the default rate
	Start    time.Time     `json:"start,omitzero"` // when the volume became available; zero while creating
	Duration time.Duration `json:"duration"`
	Done     bool          `json:"done,omitempty"`
}

// initializationRate checks CreateVolume's VolumeInitializationRate: supported only for volumes created
// from snapshots, 100 to 300 MiB/s. AWS answers a rate without a snapshot with a 400 whose code it does
// not document; the sim answers InvalidParameterCombination, as it does for other parameters that do not
// go together (iops for a type without it).
func initializationRate(p params, fromSnapshot bool) (int, *apiError) {
	if !p.has("VolumeInitializationRate") {
		return 0, nil
	}
	rate, aerr := p.integer("VolumeInitializationRate", 0)
	if aerr != nil {
		return 0, aerr
	}
	if !fromSnapshot {
		return 0, badRequest("InvalidParameterCombination", "The parameter volumeInitializationRate is supported only for volumes created from snapshots.")
	}
	if rate < minInitializationRate || rate > maxInitializationRate {
		return 0, badRequest("InvalidParameterValue", fmt.Sprintf("Value (%d) for parameter volumeInitializationRate is invalid. The volume initialization rate must be between %d and %d MiB/s.",
			rate, minInitializationRate, maxInitializationRate))
	}
	return rate, nil
}

// newVolumeInit is the initialization of a volume of sizeGiB made from a snapshot: at rate when one was
// asked, fully initialized at creation when fast is set (fast snapshot restore, no rate), else at the
// default rate.
func (r *Region) newVolumeInit(sizeGiB, rate int, fast bool) *volumeInit {
	switch {
	case rate > 0:
		return &volumeInit{Type: initProvisioned, Rate: rate, Duration: r.loadTime(sizeGiB, float64(rate))}
	case fast:
		return &volumeInit{Type: initDefault, Done: true}
	}
	def := r.opts.InitializationRate
	if def <= 0 {
		def = defaultInitializationRate
	}
	return &volumeInit{Type: initDefault, Duration: r.loadTime(sizeGiB, def)}
}

// loadTime is how long loading sizeGiB at rate MiB/s takes in the sim.
func (r *Region) loadTime(sizeGiB int, rate float64) time.Duration {
	return r.delay(time.Duration(float64(sizeGiB) * 1024 / rate * float64(time.Second)))
}

// startInitLocked starts loading v's blocks, now that it is available.
func (r *Region) startInitLocked(v *volume, now time.Time) {
	in := v.Init
	if in == nil || in.Done || !in.Start.IsZero() {
		return
	}
	in.Start = now
	r.scheduleInitLocked(v)
}

// scheduleInitLocked completes v's initialization at its recorded end.
func (r *Region) scheduleInitLocked(v *volume) {
	in := v.Init
	if in == nil || in.Done || in.Start.IsZero() {
		return
	}
	r.scheduleLocked("init/"+v.ID, VolumeInitialize, max(0, time.Until(in.Start.Add(in.Duration))), false, func() {
		if v.Init == in && r.w.Volumes[v.ID] == v {
			in.Done = true
		}
	})
}

// progress is the initialization's percentage: 0 while the volume is creating, growing with time, at most
// 99 until it is done (also while a Hold keeps it), then 100.
func (in *volumeInit) progress(now time.Time) int {
	switch {
	case in.Done:
		return 100
	case in.Start.IsZero():
		return 0
	case in.Duration <= 0:
		return 99
	}
	return min(99, max(0, int(100*now.Sub(in.Start)/in.Duration)))
}

// secondsLeft is the estimated time to complete, in whole seconds (never 0 before it is done).
func (in *volumeInit) secondsLeft(now time.Time) int {
	if in.Done {
		return 0
	}
	left := in.Duration
	if !in.Start.IsZero() {
		left = in.Start.Add(in.Duration).Sub(now)
	}
	return max(1, int(math.Ceil(left.Seconds())))
}

// initFields are a volume's InitializationStatusDetails. The estimated time is "only available for volumes
// created with Amazon EBS Provisioned Rate for Volume Initialization"
// (https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_InitializationStatusDetails.html).
func initFields(in *volumeInit, now time.Time) node {
	kids := []node{tx("initializationType", in.Type), num("progress", in.progress(now))}
	if in.Type == initProvisioned {
		kids = append(kids, num("estimatedTimeToCompleteInSeconds", in.secondsLeft(now)))
	}
	return el("initializationStatusDetails", kids...)
}

// describeVolumeStatus reports each volume's status checks and, for a volume created from a snapshot, its
// initialization (https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_DescribeVolumeStatus.html).
// The sim's volumes are always healthy: io-enabled passed, io-performance not-applicable; a volume still
// creating has insufficient-data.
func (r *Region) describeVolumeStatus(c *reqCtx) ([]node, *apiError) {
	ids := c.p.list("VolumeId")
	if len(ids) > 0 && c.p.has("MaxResults") {
		return nil, badRequest("InvalidParameterCombination", "The parameter volumeSet cannot be used with the parameter maxResults")
	}
	vols, aerr := selectVisible(r, c, ids, r.w.Volumes, r.findVolume, func(v *volume) (time.Time, string) { return v.Created, v.ID },
		"InvalidVolume.NotFound", func(missing []string) string {
			return fmt.Sprintf("The volume '%s' does not exist.", missing[0])
		})
	if aerr != nil {
		return nil, aerr
	}
	matched, aerr := matching(c.p.filters(), vols, func(v *volume) (map[string]string, fieldFunc) { return nil, volumeStatusField(v) })
	if aerr != nil {
		return nil, aerr
	}
	pg, next, aerr := page(c.p, matched, 5, 1000)
	if aerr != nil {
		return nil, aerr
	}
	var items []node
	for _, v := range pg {
		items = append(items, el("", volumeStatusFields(v, r, c.now)...))
	}
	return []node{list("volumeStatusSet", "item", items), opt("nextToken", next)}, nil
}

// volumeStatus is the overall status DescribeVolumeStatus reports for v.
func volumeStatus(v *volume) string {
	if v.State == "creating" {
		return "insufficient-data"
	}
	return "ok"
}

func volumeStatusFields(v *volume, r *Region, now time.Time) []node {
	io := "passed"
	if v.State == "creating" {
		io = "insufficient-data"
	}
	details := []node{
		el("", tx("name", "io-enabled"), tx("status", io)),
		el("", tx("name", "io-performance"), tx("status", "not-applicable")),
	}
	out := []node{
		tx("volumeId", v.ID), tx("availabilityZone", v.AZ), tx("availabilityZoneId", r.azID(v.AZ)),
		el("volumeStatus", tx("status", volumeStatus(v)), list("details", "item", details)),
		list("eventsSet", "item", nil), list("actionsSet", "item", nil),
	}
	if v.Init != nil {
		out = append(out, initFields(v.Init, now))
	}
	return out
}

func volumeStatusField(v *volume) fieldFunc {
	return func(name string) ([]string, bool) {
		switch name {
		case "availability-zone":
			return []string{v.AZ}, true
		case "volume-status.status":
			return []string{volumeStatus(v)}, true
		case "volume-status.details-name":
			return []string{"io-enabled", "io-performance"}, true
		}
		return nil, false
	}
}
