package sim

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// world is everything the region remembers. It is saved as JSON after every
// change; runtime-only things (timers, servers, loop devices, IMDS tokens)
// live on Region instead and are rebuilt by Start.
type world struct {
	Volumes      map[string]*volume         `json:"volumes"`
	Snapshots    map[string]*snapshot       `json:"snapshots"`
	Instances    map[string]*instance       `json:"instances"`
	Addresses    map[string]*address        `json:"addresses"`
	Templates    map[string]*launchTemplate `json:"launchTemplates"`
	Groups       map[string]*group          `json:"groups"`
	ClientTokens map[string]clientToken     `json:"clientTokens"`
	FastRestores map[string]*fastRestore    `json:"fastRestores"` // snapshot/zone -> fast snapshot restore (ec2_fast_restore.go)
	IPSeq        int                        `json:"ipSeq"`
	// KMSKeyStates holds the state of the KMS keys a test made unusable (SetKMSKeyState), by the key
	// id as CreateVolume is given it; a key not in it is Enabled.
	KMSKeyStates map[string]string `json:"kmsKeyStates,omitempty"`
}

// clientToken remembers what a ClientToken created and with which
// parameters, for idempotent retries (see "Ensuring idempotency in Amazon EC2
// API requests").
type clientToken struct {
	ResourceID string `json:"resourceId"`
	Params     string `json:"params"`
}

type volume struct {
	ID         string            `json:"id"`
	AZ         string            `json:"az"`
	Size       int               `json:"size"`
	Type       string            `json:"type"`
	Iops       int               `json:"iops,omitempty"`
	Throughput int               `json:"throughput,omitempty"`
	Encrypted  bool              `json:"encrypted,omitempty"`
	KmsKeyID   string            `json:"kmsKeyId,omitempty"`
	SnapshotID string            `json:"snapshotId,omitempty"`
	State      string            `json:"state"`
	Created    time.Time         `json:"created"`
	Tags       map[string]string `json:"tags,omitempty"`
	Attachment *attachment       `json:"attachment,omitempty"`
	Mod        *modification     `json:"modification,omitempty"` // the latest ModifyVolume
	// LastSnapshot is when the latest CreateSnapshot of this volume succeeded (SnapshotInterval).
	LastSnapshot time.Time `json:"lastSnapshot,omitzero"`
	// Init is a restored volume's initialization (ec2_volume_init.go); nil for a blank one. FastRestored:
	// made from a snapshot enabled for fast snapshot restore in its zone.
	Init         *volumeInit `json:"init,omitempty"`
	FastRestored bool        `json:"fastRestored,omitempty"`
	lag          []volumeLag // attachments before recent calls, for reads inside the consistency delay
}

// modification is a volume's latest Elastic Volumes change, as
// DescribeVolumesModifications reports it: modifying for the first half of
// Duration, optimizing for the second, then completed.
type modification struct {
	State          string        `json:"state"` // modifying, optimizing, completed
	Start          time.Time     `json:"start"`
	Duration       time.Duration `json:"duration"`
	OrigSize       int           `json:"origSize"`
	OrigType       string        `json:"origType"`
	OrigIops       int           `json:"origIops,omitempty"`
	OrigThroughput int           `json:"origThroughput,omitempty"`
}

type attachment struct {
	InstanceID string    `json:"instanceId"`
	Device     string    `json:"device"`
	State      string    `json:"state"` // attaching, attached, detaching, busy (a detach waiting for a mounted device)
	Time       time.Time `json:"time"`
	Force      bool      `json:"force,omitempty"` // the detach was forced: a mounted device does not hold it
}

type snapshot struct {
	ID          string            `json:"id"`
	VolumeID    string            `json:"volumeId"`
	VolumeSize  int               `json:"volumeSize"`
	State       string            `json:"state"` // pending, completed, error
	Start       time.Time         `json:"start"`
	Duration    time.Duration     `json:"duration"`
	Description string            `json:"description,omitempty"`
	Encrypted   bool              `json:"encrypted,omitempty"`
	KmsKeyID    string            `json:"kmsKeyId,omitempty"`
	Tags        map[string]string `json:"tags,omitempty"`
	Lock        *snapshotLock     `json:"lock,omitempty"` // EBS snapshot lock (ec2_snapshot_lock.go)
}

type instance struct {
	ID            string            `json:"id"`
	ImageID       string            `json:"imageId"`
	Type          string            `json:"type"`
	AZ            string            `json:"az"`
	SubnetID      string            `json:"subnetId"`
	State         string            `json:"state"`
	PrivateIP     string            `json:"privateIp"`
	MAC           string            `json:"mac"`
	ENI           string            `json:"eni"`
	LaunchTime    time.Time         `json:"launchTime"`
	RunningSince  time.Time         `json:"runningSince,omitzero"`
	Tags          map[string]string `json:"tags,omitempty"`
	MetadataTags  bool              `json:"metadataTags,omitempty"`
	HTTPTokens    string            `json:"httpTokens"`
	IMDSPort      int               `json:"imdsPort,omitempty"`
	SpotAction    string            `json:"spotAction,omitempty"`
	SpotTime      time.Time         `json:"spotTime,omitzero"`
	RebalanceTime time.Time         `json:"rebalanceTime,omitzero"`
	Events        []ScheduledEvent  `json:"events,omitempty"` // events/maintenance/scheduled (ScheduleEvent)
	StateReason   string            `json:"stateReason,omitempty"`
	TemplateID    string            `json:"templateId,omitempty"`
	Reservation   string            `json:"reservation"`
	// Status checks forced by SetInstanceStatus ("" = automatic).
	SystemStatus   string    `json:"systemStatus,omitempty"`
	InstanceStatus string    `json:"instanceStatus,omitempty"`
	StatusSince    time.Time `json:"statusSince,omitzero"`
	// HangShutdown keeps the instance in shutting-down (and stopping) until
	// released or, for a stop, forced (StopForced: StopInstances Force=true).
	HangShutdown bool `json:"hangShutdown,omitempty"`
	StopForced   bool `json:"stopForced,omitempty"`

	// Auto Scaling membership.
	Group     string      `json:"group,omitempty"`
	Lifecycle string      `json:"lifecycle,omitempty"`
	Health    string      `json:"health,omitempty"`
	Replace   bool        `json:"replace,omitempty"` // marked for replacement (unhealthy or terminated without decrement)
	Hook      *activeHook `json:"hook,omitempty"`
}

// activeHook is a lifecycle action in progress on an instance.
type activeHook struct {
	Name           string    `json:"name"`
	Transition     string    `json:"transition"`
	Token          string    `json:"token"`
	DefaultResult  string    `json:"defaultResult"`
	Deadline       time.Time `json:"deadline"`
	GlobalDeadline time.Time `json:"globalDeadline"`
	Result         string    `json:"result,omitempty"` // set once completed
}

type address struct {
	AllocationID  string            `json:"allocationId"`
	PublicIP      string            `json:"publicIp"`
	Domain        string            `json:"domain"`
	AssociationID string            `json:"associationId,omitempty"`
	InstanceID    string            `json:"instanceId,omitempty"`
	ENI           string            `json:"eni,omitempty"`
	PrivateIP     string            `json:"privateIp,omitempty"`
	Created       time.Time         `json:"created"`
	Tags          map[string]string `json:"tags,omitempty"`
	lag           []addressLag      // associations before recent calls, for reads inside the consistency delay
}

type launchTemplate struct {
	ID           string                       `json:"id"`
	Name         string                       `json:"name"`
	Created      time.Time                    `json:"created"`
	ImageID      string                       `json:"imageId"`
	InstanceType string                       `json:"instanceType"`
	MetadataTags bool                         `json:"metadataTags,omitempty"`
	HTTPTokens   string                       `json:"httpTokens,omitempty"`
	TagSpecs     map[string]map[string]string `json:"tagSpecs,omitempty"` // resource type -> tags
	Tags         map[string]string            `json:"tags,omitempty"`
}

type group struct {
	Name              string           `json:"name"`
	ARN               string           `json:"arn"`
	TemplateID        string           `json:"templateId"`
	TemplateName      string           `json:"templateName"`
	TemplateVersion   string           `json:"templateVersion"`
	Min               int              `json:"min"`
	Max               int              `json:"max"`
	Desired           int              `json:"desired"`
	AZs               []string         `json:"azs"`
	VPCZoneIdentifier string           `json:"vpcZoneIdentifier,omitempty"`
	Tags              []groupTag       `json:"tags,omitempty"`
	MinHealthy        int              `json:"minHealthy"` // -1 when no instance maintenance policy
	MaxHealthy        int              `json:"maxHealthy"`
	HealthCheckType   string           `json:"healthCheckType"`
	GracePeriod       int              `json:"gracePeriod"`
	Hooks             map[string]*hook `json:"hooks,omitempty"`
	Created           time.Time        `json:"created"`
	Deleting          bool             `json:"deleting,omitempty"`
	CapacityRebalance bool             `json:"capacityRebalance,omitempty"`
	WarmPool          *warmPool        `json:"warmPool,omitempty"` // sim/asg_warmpool.go
}

type groupTag struct {
	Key               string `json:"key"`
	Value             string `json:"value"`
	PropagateAtLaunch bool   `json:"propagateAtLaunch"`
}

type hook struct {
	Name             string `json:"name"`
	Transition       string `json:"transition"`
	HeartbeatTimeout int    `json:"heartbeatTimeout"`
	DefaultResult    string `json:"defaultResult"`
	Metadata         string `json:"metadata,omitempty"`
}

func newWorld() *world {
	w := &world{}
	w.fillMaps()
	return w
}

// fillMaps makes every nil map of w an empty one.
func (w *world) fillMaps() {
	fill(&w.Volumes)
	fill(&w.Snapshots)
	fill(&w.Instances)
	fill(&w.Addresses)
	fill(&w.Templates)
	fill(&w.Groups)
	fill(&w.ClientTokens)
	fill(&w.FastRestores)
}

func fill[V any](m *map[string]V) {
	if *m == nil {
		*m = map[string]V{}
	}
}

func (r *Region) statePath() string { return filepath.Join(r.opts.StateDir, "state.json") }

// loadState reads state.json; a missing file is a fresh region.
func loadState(path string) (*world, error) {
	w := newWorld()
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return w, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read simulator state: %w", err)
	}
	if err := json.Unmarshal(b, w); err != nil {
		return nil, fmt.Errorf("parse simulator state %s: %w", path, err)
	}
	// Maps may be absent in a file written by an older version.
	w.fillMaps()
	return w, nil
}

// saveLocked writes state.json atomically (temp file + rename) so a crash
// never leaves half a file. Caller holds r.mu.
func (r *Region) saveLocked() {
	if r.saved {
		return // after Close's last save the caller may be removing StateDir
	}
	b, err := json.MarshalIndent(r.w, "", " ")
	if err != nil {
		r.log.Error("encode state", "err", err)
		return
	}
	tmp := r.statePath() + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		r.log.Error("write state", "err", err)
		return
	}
	if err := os.Rename(tmp, r.statePath()); err != nil {
		r.log.Error("rename state", "err", err)
	}
}
