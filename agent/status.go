package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/handover/handover/cloud"
	"github.com/handover/handover/internal/fail"
	"github.com/handover/handover/internal/logkey"
)

// statusConfig is `handover status`.
type statusConfig struct {
	JSON bool
	Up   upConfig // up's options, so that the plan shown is the one up would follow
}

// statusEC2Bound bounds the EC2 part of status: an operator in an incident wants an answer, not a hang.
const statusEC2Bound = 20 * time.Second

// statusReport is what `status --json` prints.
type statusReport struct {
	self
	Group    string       `json:"group"`
	EC2      *groupReport `json:"ec2,omitempty"`
	EC2Error string       `json:"ec2_error,omitempty"`
}

// declareStatus declares status's flags: --json, and up's options, so that the plan shown is up's.
func declareStatus(c *statusConfig, f *flags) {
	f.fs.BoolVar(&c.JSON, "json", false, "print JSON instead of text")
	c.Up.register(f)
}

// runStatus is `handover status`: read-only. The instance's identity and tags; then, when the group is
// known, the EC2 side (who holds the Elastic IP, the slots' volumes per AZ and snapshots) and the plan
// `handover up` would follow from here with the same options.
func runStatus(ctx context.Context, e Env, args []string) error {
	var cfg statusConfig
	s, err := start(ctx, e, args, startSpec{name: "status", imdsTimeout: 5 * time.Second, optionalGroup: true,
		declare:  func(f *flags) { declareStatus(&cfg, f) },
		validate: cfg.Up.validate})
	if err != nil {
		return err
	}
	id, tags, from, log := s.id, s.tags, s.tagsFrom, s.log
	cfg.Up.Shape.TypeSet = s.flags.isSet("type") // the plan restores the way up would
	st := statusReport{self: self{Identity: id, Tags: tags, TagsFrom: from}, Group: s.group}
	if st.Group != "" {
		ectx, cancel := context.WithTimeout(ctx, statusEC2Bound)
		rep, err := buildReport(ectx, s.clients, id.InstanceID, id.AvailabilityZone, st.Group, cfg.Up)
		if err == nil {
			st.EC2 = &rep
		}
		cancel()
		if err != nil {
			// status reports what it could see: the local part stands, and the EC2 part says why it is
			// missing (no credentials, no permission, no network) instead of hiding the rest.
			st.EC2Error = fail.OneLine(err.Error())
			log.Warn("EC2 side unavailable", logkey.Group, st.Group, logkey.Error, st.EC2Error)
		}
	}

	if cfg.JSON {
		enc := json.NewEncoder(e.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(st)
	}
	w := e.Stdout
	fmt.Fprintf(w, "instance   %s (%s)\n", id.InstanceID, id.InstanceType)
	fmt.Fprintf(w, "zone       %s (%s), region %s, account %s\n", id.AvailabilityZone, orDash(id.AvailabilityZoneID), id.Region, id.AccountID)
	group := st.Group
	if group == "" {
		group = "- (no handover:group tag; pass --group)"
	}
	fmt.Fprintf(w, "group      %s\n", group)
	fmt.Fprintf(w, "tags       (from %s)\n", from)
	keys := make([]string, 0, len(tags))
	for k := range tags {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(w, "  %s = %s\n", k, tags[k])
	}
	if st.EC2 != nil {
		printReport(w, *st.EC2, true)
	}
	if st.EC2Error != "" {
		fmt.Fprintf(w, "ec2        unavailable: %s\n", st.EC2Error)
	}
	return nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// groupReport is the EC2 side of a group as this instance sees it, and the plan `up` would follow from
// here: what `handover status` shows and what `handover up --dry-run` prints. Building it makes no
// mutating call.
type groupReport struct {
	Address     *addressReport `json:"address,omitempty"`
	AddressPlan string         `json:"address_plan"`
	Lifecycle   string         `json:"lifecycle_plan,omitempty"`
	Slots       []slotReport   `json:"slots"`
	// refusal is the first refusal of the plan, returned by the dry run so that its exit code is the one
	// the real run would end with.
	refusal error
}

type addressReport struct {
	AllocationID string `json:"allocation_id"`
	PublicIP     string `json:"public_ip"`
	InstanceID   string `json:"instance_id,omitempty"`
	Holder       string `json:"holder,omitempty"` // "this instance", or the holder's state
}

type slotReport struct {
	Slot       string           `json:"slot"`
	Device     string           `json:"device"`
	MountPoint string           `json:"mount_point"`
	Volumes    []volumeReport   `json:"volumes"`
	Snapshots  []snapshotReport `json:"snapshots"`
	Action     string           `json:"action"`
	Plan       string           `json:"plan"`
	Warning    string           `json:"warning,omitempty"`
	// InitializationError says why the restored volumes' initialization is missing (DescribeVolumeStatus
	// failed: no permission, say); the rest of the report stands.
	InitializationError string `json:"initialization_error,omitempty"`
}

type volumeReport struct {
	ID           string `json:"volume_id"`
	AZ           string `json:"az"`
	State        string `json:"state"`
	Generation   int    `json:"generation"`
	SizeGiB      int32  `json:"size_gib"`
	Type         string `json:"type"`
	AttachedTo   string `json:"attached_to,omitempty"`
	Attachment   string `json:"attachment_state,omitempty"`
	CreatedBlank bool   `json:"created_blank,omitempty"`
	Superseded   bool   `json:"superseded,omitempty"`
	IOPS         int32  `json:"iops,omitempty"`
	Throughput   int32  `json:"throughput,omitempty"`
	// A volume restored from a snapshot: how it was initialized (a provisioned rate, fast snapshot
	// restore) and how far it is (DescribeVolumeStatus): full performance once progress is 100.
	InitializationRate int32                 `json:"initialization_rate,omitempty"`
	FastRestored       bool                  `json:"fast_restored,omitempty"`
	Initialization     *cloud.Initialization `json:"initialization,omitempty"`
}

type snapshotReport struct {
	ID         string    `json:"snapshot_id"`
	State      string    `json:"state"`
	Progress   string    `json:"progress"`
	Generation int       `json:"generation"`
	Consistent bool      `json:"consistent"`
	SizeGiB    int32     `json:"size_gib"`
	Started    time.Time `json:"started"`
	Source     string    `json:"source_volume,omitempty"`
}

// describeAddressPlan is the address plan as status and `up --dry-run` show it.
func describeAddressPlan(p cloud.AddressPlan, cfg upConfig) string {
	switch p.Action {
	case cloud.AddressHeld:
		return "nothing to do: held by this instance"
	case cloud.AddressAssociate:
		return "associate (free)"
	case cloud.AddressMoveHere:
		return "move to " + orDash(cfg.NetworkInterface) + " (on another interface of this instance)"
	case cloud.AddressTakeOver:
		return "take over: " + p.Why
	case cloud.AddressTakeOverLive:
		return "take over from a live holder (--takeover): " + p.Why
	}
	return fmt.Sprintf("wait up to %s (--release-timeout) for it to be released, then exit 4: %s", cfg.ReleaseTimeout, p.Why)
}

// buildReport observes the group's address, its slots and this instance's place in Auto Scaling, and
// plans each like `up` would.
func buildReport(ctx context.Context, c *cloud.Clients, instanceID, az, group string, cfg upConfig) (groupReport, error) {
	var rep groupReport
	a, err := cloud.FindGroupAddress(ctx, c.EC2, group)
	switch {
	case ExitCode(err) == fail.CodePrecondition:
		rep.AddressPlan = "refuse: " + err.Error()
		rep.refusal = err
	case err != nil:
		return rep, err
	default:
		ar := &addressReport{AllocationID: a.AllocationID, PublicIP: a.PublicIP, InstanceID: a.InstanceID}
		rep.Address = ar
		p, err := cloud.PlanAddress(ctx, c, a, cfg.claimSpec(group, instanceID))
		if err != nil {
			return rep, err
		}
		ar.Holder = p.Why
		if a.InstanceID == instanceID {
			ar.Holder = "this instance"
		}
		rep.AddressPlan = describeAddressPlan(p, cfg)
	}
	var sets *cloud.SetChoice // a group of several slots restores one snapshot set (as up's precheck)
	if specs := cfg.Volumes.orDefault(); len(specs) > 1 {
		var slots []string
		for _, spec := range specs {
			slots = append(slots, spec.Slot)
		}
		ch, err := cloud.ObserveSets(ctx, c.EC2, group, slots, nil, "")
		if err != nil {
			return rep, err
		}
		sets = &ch
	}
	for _, spec := range cfg.Volumes.orDefault() {
		view, err := cloud.ObserveSlot(ctx, c, group, spec.Slot, instanceID)
		if err != nil {
			return rep, err
		}
		p := cloud.PlanSlot(cloud.PlanInput{InstanceID: instanceID, AZ: az, Group: group, Slot: spec.Slot, View: view,
			Takeover: cfg.Takeover, RequireData: cfg.RequireData, Sets: sets})
		sr := slotReport{Slot: spec.Slot, Device: spec.Device, MountPoint: spec.MountPoint, Action: p.Action.String(), Plan: describePlan(p, spec, cfg), Warning: p.Warn}
		inits, err := restoredInitialization(ctx, c.EC2, view.Volumes)
		if err != nil {
			sr.InitializationError = fail.OneLine(err.Error())
		}
		for _, v := range view.Volumes {
			vr := volumeReport{ID: v.ID, AZ: v.AZ, State: v.State, Generation: v.Generation, SizeGiB: v.SizeGiB, Type: v.VolumeType,
				CreatedBlank: v.CreatedBlank, Superseded: v.Superseded, IOPS: v.IOPS, Throughput: v.Throughput,
				InitializationRate: v.InitializationRate, FastRestored: v.FastRestored}
			if in, ok := inits[v.ID]; ok {
				vr.Initialization = &in
			}
			for _, at := range v.Attachments {
				vr.AttachedTo, vr.Attachment = at.InstanceID, at.State
			}
			sr.Volumes = append(sr.Volumes, vr)
		}
		for _, s := range view.Snapshots {
			sr.Snapshots = append(sr.Snapshots, snapshotReport{ID: s.ID, State: s.State, Progress: s.Progress, Generation: s.Generation,
				Consistent: s.Consistent, SizeGiB: s.VolumeSizeGiB, Started: s.StartTime, Source: s.SourceVolume})
		}
		if p.Action == cloud.PlanRefuse && rep.refusal == nil {
			rep.refusal = p.Err
		}
		rep.Slots = append(rep.Slots, sr)
	}
	m, err := cloud.MembershipOf(ctx, c.AutoScaling, instanceID)
	if err != nil {
		return rep, err
	}
	switch {
	case m.ASGName == "":
		rep.Lifecycle = "not in an Auto Scaling group: no lifecycle action"
	case m.LifecycleState != "Pending:Wait":
		rep.Lifecycle = fmt.Sprintf("in group %s, %s: no launch action pending", m.ASGName, m.LifecycleState)
	case cfg.LaunchHook == "":
		rep.Lifecycle = fmt.Sprintf("in group %s, Pending:Wait, but no --launch-hook: the action times out on its own", m.ASGName)
	case cfg.NoComplete:
		rep.Lifecycle = fmt.Sprintf("heartbeat hook %s of group %s, leave it pending (--no-complete)", cfg.LaunchHook, m.ASGName)
	default:
		rep.Lifecycle = fmt.Sprintf("heartbeat hook %s of group %s, complete it with CONTINUE (ABANDON on failure)", cfg.LaunchHook, m.ASGName)
	}
	return rep, nil
}

// describePlan is one line saying what up would do for the slot.
func describePlan(p cloud.SlotPlan, spec volumeSpec, cfg upConfig) string {
	mount := fmt.Sprintf(", then mount at %s", spec.MountPoint)
	if cfg.NoMount {
		mount = " (--no-mount: no mount)"
	}
	switch p.Action {
	case cloud.PlanDone:
		return p.Why + mount
	case cloud.PlanAttach:
		return fmt.Sprintf("attach %s at %s: %s%s", p.Volume.ID, spec.Device, p.Why, mount)
	case cloud.PlanRestore:
		shape, notes := cloud.RestoreShape(cfg.Shape, p.Snapshot)
		line := fmt.Sprintf("%s: %d GiB %s", p.Why, shape.SizeGiB, shape.Type)
		if len(notes) > 0 {
			line += " (" + strings.Join(notes, "; ") + ")"
		}
		if shape.InitializationRate > 0 {
			line += fmt.Sprintf(", initialization rate %d MiB/s unless the snapshot is enabled for fast snapshot restore here", shape.InitializationRate)
		}
		return fmt.Sprintf("%s, attach at %s%s", line, spec.Device, mount)
	case cloud.PlanBlank:
		return fmt.Sprintf("%s: %d GiB %s, attach at %s, make %s%s", p.Why, cfg.Shape.SizeGiB, cfg.Shape.Type, spec.Device, cfg.FS, mount)
	case cloud.PlanRefuse:
		return "refuse: " + p.Err.Error()
	case cloud.PlanWaitHolder:
		if p.Live {
			return fmt.Sprintf("wait up to %s (--release-timeout), then exit 4: %s", cfg.ReleaseTimeout, p.Why)
		}
		return fmt.Sprintf("wait up to %s (--release-timeout): %s", cfg.ReleaseTimeout, p.Why)
	default:
		return p.Why
	}
}

// printReport writes the report as text.
func printReport(w io.Writer, rep groupReport, showInventory bool) {
	if a := rep.Address; a != nil {
		holder := "free"
		if a.InstanceID != "" {
			holder = "held by " + a.InstanceID
			if a.Holder != "" {
				holder += " (" + a.Holder + ")"
			}
		}
		fmt.Fprintf(w, "address    %s %s: %s\n", a.PublicIP, a.AllocationID, holder)
	}
	fmt.Fprintf(w, "  plan     %s\n", rep.AddressPlan)
	for _, s := range rep.Slots {
		fmt.Fprintf(w, "slot       %s (%s at %s)\n", s.Slot, s.Device, s.MountPoint)
		if showInventory {
			byAZ := map[string][]volumeReport{}
			var azs []string
			for _, v := range s.Volumes {
				if _, ok := byAZ[v.AZ]; !ok {
					azs = append(azs, v.AZ)
				}
				byAZ[v.AZ] = append(byAZ[v.AZ], v)
			}
			sort.Strings(azs)
			if len(azs) == 0 {
				fmt.Fprintln(w, "  volumes  none")
			}
			for _, az := range azs {
				for _, v := range byAZ[az] {
					var notes []string
					if v.AttachedTo != "" {
						notes = append(notes, v.Attachment+" to "+v.AttachedTo)
					}
					if v.CreatedBlank {
						notes = append(notes, "created blank")
					}
					if v.Superseded {
						notes = append(notes, "superseded")
					}
					if in := v.Initialization; in != nil {
						how := in.String()
						switch {
						case v.FastRestored:
							how += ", fast snapshot restore"
						case v.InitializationRate > 0:
							how += fmt.Sprintf(", %d MiB/s", v.InitializationRate)
						}
						notes = append(notes, how)
					}
					fmt.Fprintf(w, "  %-8s %s generation %d, %s, %d GiB %s %s\n", az, v.ID, v.Generation, v.State, v.SizeGiB, v.Type, strings.Join(notes, ", "))
				}
			}
			const shown = 5
			if len(s.Snapshots) == 0 {
				fmt.Fprintln(w, "  snapshots none")
			}
			for i, sn := range s.Snapshots {
				if i == shown {
					fmt.Fprintf(w, "  ... and %d older snapshots\n", len(s.Snapshots)-shown)
					break
				}
				kind := "crash-consistent"
				if sn.Consistent {
					kind = "consistent"
				}
				fmt.Fprintf(w, "  snapshot %s generation %d, %s %s, %s, %d GiB, %s\n", sn.ID, sn.Generation, sn.State, sn.Progress, kind, sn.SizeGiB, sn.Started.UTC().Format(time.RFC3339))
			}
		}
		if s.InitializationError != "" {
			fmt.Fprintf(w, "  init     unknown: %s\n", s.InitializationError)
		}
		fmt.Fprintf(w, "  plan     %s\n", s.Plan)
		if s.Warning != "" {
			fmt.Fprintf(w, "  warning  %s\n", s.Warning)
		}
	}
	if rep.Lifecycle != "" {
		fmt.Fprintf(w, "lifecycle  %s\n", rep.Lifecycle)
	}
}

// plan is `up --dry-run`: the report, with nothing changed. Its exit code is the one the real run would
// end with when the plan refuses.
func (r *upRun) plan(ctx context.Context, w io.Writer) error {
	rep, err := buildReport(ctx, r.clients, r.me.InstanceID, r.me.AvailabilityZone, r.group, r.cfg)
	if err != nil {
		return err
	}
	if r.clients.AutoScaling != nil {
		if m, err := cloud.MembershipOf(ctx, r.clients.AutoScaling, r.me.InstanceID); err == nil && cloud.WarmedState(m.LifecycleState) {
			rep.Lifecycle = "warm pool (" + m.LifecycleState + "): up would only complete the launch hook; the plan above waits until the group takes this instance from the pool"
		} else if err == nil && m.ASGName != "" {
			if err := cloud.CheckReplacementOrder(ctx, r.log, r.clients.AutoScaling, m.ASGName); err != nil {
				rep.Lifecycle = "refuse: " + err.Error()
				if rep.refusal == nil {
					rep.refusal = err
				}
			}
		}
	}
	fmt.Fprintf(w, "handover up --dry-run: the plan for %s in %s, group %s (nothing changed)\n", r.me.InstanceID, r.me.AvailabilityZone, r.group)
	printReport(w, rep, false)
	return rep.refusal
}

// restoredInitialization reads the initialization of the volumes made from a snapshot (blank ones have
// none), for the report.
func restoredInitialization(ctx context.Context, c cloud.EC2, vols []cloud.Volume) (map[string]cloud.Initialization, error) {
	var ids []string
	for _, v := range vols {
		if v.SnapshotID != "" {
			ids = append(ids, v.ID)
		}
	}
	return cloud.DescribeInitialization(ctx, c, ids)
}
