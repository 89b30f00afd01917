package failover

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/cenkalti/backoff/v4"
	"github.com/handover/handover/cloud"
	"github.com/handover/handover/internal/fail"
	"github.com/handover/handover/internal/logkey"
	"github.com/handover/handover/internal/wait"
)

// Standby failover (pattern 3): a primary and a standby instance, both tagged handover:group=NAME and
// handover:role=primary|standby, share the group's Elastic IP. Failover starts the standby if it is stopped
// and moves the address to it. `handover failover` (an operator or a script) and the handover-failover
// Lambda function (an alarm or an EC2 state change) both call Failover, so they decide the same way.

// Values of the handover:role tag.
const (
	RolePrimary = "primary"
	RoleStandby = "standby"
)

// Reasons the Lambda function branches on. Both come wrapped in an *fail.Error (exit 3) that says what to do.
var (
	// ErrNotConcerned: the instance a request names as failed is unknown, in no handover group (or not in
	// the configured one), or is not its group's primary. The event is not about a failover handover runs.
	ErrNotConcerned = errors.New("not a handover primary")
	// ErrPrimaryHealthy: the instance holding the address is running with both status checks ok, and the
	// request did not say to move the address anyway (Force).
	ErrPrimaryHealthy = errors.New("the primary is healthy")
)

// Request says which group fails over to which instance, and how.
type Request struct {
	// Group is the handover group; empty means the group of To or From.
	Group string
	// To is the target instance; empty means the group's one instance tagged handover:role=standby.
	To string
	// From, when set, is the instance reported as failed (by an alarm or a state change). The address is
	// moved only away from it: when it is not the group's primary the request is not concerned
	// (ErrNotConcerned), and when the address is already elsewhere there is nothing to do.
	From string
	// Force moves the address even from a holder that is running with status checks ok.
	Force bool
	// WaitStatusOK waits, after the target runs, until both its status checks pass.
	WaitStatusOK bool
	// SwapRoles tags the target handover:role=primary and the group's other primaries standby once the
	// address is on the target, so that the next failover goes back the other way.
	SwapRoles bool
	DryRun    bool
	// StartTimeout bounds the wait for the target to run; StatusTimeout the wait for its status checks.
	StartTimeout  time.Duration
	StatusTimeout time.Duration
}

// Failover outcomes (Result.Action).
const (
	Moved       = "moved"         // the address was associated with the target and verified
	Already     = "already"       // the address was already on the target
	NothingToDo = "nothing-to-do" // From does not hold the address; someone else does
	Planned     = "planned"       // dry run: Plan says what would be done
)

// Result says what Failover found and did.
type Result struct {
	Group        string   `json:"group"`
	AllocationID string   `json:"allocation_id,omitempty"`
	PublicIP     string   `json:"public_ip,omitempty"`
	Target       string   `json:"target,omitempty"`
	Previous     string   `json:"previous,omitempty"` // the holder before, if any
	Action       string   `json:"action"`
	Started      bool     `json:"started,omitempty"` // the target was stopped and Failover started it
	RolesSwapped bool     `json:"roles_swapped,omitempty"`
	Reason       string   `json:"reason,omitempty"`
	Plan         []string `json:"plan,omitempty"`
}

// Defaults for the bounds. An EBS-backed instance usually reaches running within a minute of
// StartInstances; status checks take a few more minutes after that.
// https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/monitoring-system-instance-status-check.html
const (
	DefaultStartTimeout  = 5 * time.Minute
	DefaultStatusTimeout = 10 * time.Minute
	failoverClaimBound   = 2 * time.Minute
)

var instanceIDPattern = regexp.MustCompile(`^i-[0-9a-f]{8}([0-9a-f]{9})?$`)

// ValidInstanceID reports whether id is an EC2 instance ID (i- and 8 or 17 hex digits), as Validate wants
// --to and --from.
func ValidInstanceID(id string) bool { return instanceIDPattern.MatchString(id) }

// Validate checks a request in one place; its errors name the CLI flags (HANDOVER_GROUP for the Lambda).
func (r Request) Validate() error {
	if r.Group == "" && r.To == "" && r.From == "" {
		return fail.Usage("name the group (--group or HANDOVER_GROUP), the target (--to) or the failed primary (--from)")
	}
	if r.Group != "" && !cloud.ValidGroupName(r.Group) {
		return fail.Usage(fmt.Sprintf("--group %q: use letters, digits, '-', '_' and '.' only", r.Group))
	}
	for _, v := range []struct{ flag, id string }{{"to", r.To}, {"from", r.From}} {
		if v.id != "" && !instanceIDPattern.MatchString(v.id) {
			return fail.Usage(fmt.Sprintf("--%s %q: want an instance ID like i-0123456789abcdef0", v.flag, v.id))
		}
	}
	if r.To != "" && r.To == r.From {
		return fail.Usage(fmt.Sprintf("--to and --from both name %s: the target must be another instance", r.To))
	}
	if r.StartTimeout < 0 || r.StatusTimeout < 0 {
		return fail.Usage("--start-timeout and --status-timeout must not be negative")
	}
	return nil
}

// reasonErr is an *fail.Error (the operator's line and exit code) that also matches a reason sentinel, so the
// Lambda can tell "not concerned" and "primary healthy" from other preconditions with errors.Is.
type reasonErr struct {
	err    error
	reason error
}

func (e *reasonErr) Error() string   { return e.err.Error() }
func (e *reasonErr) Unwrap() []error { return []error{e.err, e.reason} }

func NotConcerned(msg string) error {
	return &reasonErr{err: fail.Precondition(msg, nil), reason: ErrNotConcerned}
}

// MemberInstance is one instance as failover sees it.
type MemberInstance struct {
	ID    string
	State string
	AZ    string
	Group string
	Role  string
}

func (m MemberInstance) gone() bool {
	return m.State == string(ec2types.InstanceStateNameTerminated) || m.State == string(ec2types.InstanceStateNameShuttingDown)
}

func (m MemberInstance) String() string {
	role := m.Role
	if role == "" {
		role = "no role"
	}
	return fmt.Sprintf("%s (%s, %s, %s)", m.ID, role, orDash(m.State), orDash(m.AZ))
}

func toMember(i ec2types.Instance) MemberInstance {
	tags := cloud.TagMap(i.Tags)
	m := MemberInstance{ID: aws.ToString(i.InstanceId), Group: tags[cloud.TagGroup], Role: tags[cloud.TagRole]}
	if i.State != nil {
		m.State = string(i.State.Name)
	}
	if i.Placement != nil {
		m.AZ = aws.ToString(i.Placement.AvailabilityZone)
	}
	return m
}

// DescribeMember describes one instance; found is false when EC2 does not know it.
func DescribeMember(ctx context.Context, c cloud.EC2, id string) (m MemberInstance, found bool, err error) {
	out, err := c.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{id}})
	if cloud.HasCode(err, cloud.CodeInstanceNotFound) {
		return MemberInstance{}, false, nil
	}
	if err != nil {
		return MemberInstance{}, false, fmt.Errorf("describe instance %s: %w", id, err)
	}
	for _, r := range out.Reservations {
		for _, i := range r.Instances {
			if aws.ToString(i.InstanceId) == id {
				return toMember(i), true, nil
			}
		}
	}
	return MemberInstance{}, false, nil
}

// groupMembers lists the instances tagged handover:group=group, in every state (terminated ones stay
// visible for about an hour, which is how a terminated standby is reported as such).
func groupMembers(ctx context.Context, c cloud.EC2, group string) ([]MemberInstance, error) {
	var out []MemberInstance
	p := ec2.NewDescribeInstancesPaginator(c, &ec2.DescribeInstancesInput{
		Filters: []ec2types.Filter{{Name: aws.String("tag:" + cloud.TagGroup), Values: []string{group}}},
	})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("describe instances tagged %s=%s: %w", cloud.TagGroup, group, err)
		}
		for _, r := range page.Reservations {
			for _, i := range r.Instances {
				out = append(out, toMember(i))
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// PickStandby returns the group's one live instance tagged handover:role=standby.
func PickStandby(group string, members []MemberInstance) (MemberInstance, error) {
	var live, gone []MemberInstance
	for _, m := range members {
		if m.Role != RoleStandby {
			continue
		}
		if m.gone() {
			gone = append(gone, m)
		} else {
			live = append(live, m)
		}
	}
	switch {
	case len(live) == 1:
		return live[0], nil
	case len(live) > 1:
		ids := make([]string, len(live))
		for i, m := range live {
			ids[i] = m.String()
		}
		return MemberInstance{}, fail.Precondition(fmt.Sprintf("%d instances of group %s are tagged %s=%s: %s; keep the tag on one, or name the target with --to",
			len(live), group, cloud.TagRole, RoleStandby, strings.Join(ids, ", ")), nil)
	case len(gone) > 0:
		return MemberInstance{}, fail.Precondition(fmt.Sprintf("the standby of group %s, %s, is %s: launch a new standby in another AZ tagged %s=%s and %s=%s",
			group, gone[0].ID, gone[0].State, cloud.TagGroup, group, cloud.TagRole, RoleStandby), nil)
	}
	return MemberInstance{}, fail.Precondition(fmt.Sprintf("no instance is tagged %s=%s and %s=%s: tag the standby, or name the target with --to",
		cloud.TagGroup, group, cloud.TagRole, RoleStandby), nil)
}

// JudgePrimary decides whether the instance holding the address is healthy: running, not being terminated
// by its Auto Scaling group (judgeHolder), and with both the system and the instance status check ok.
// Anything else (stopping, impaired, still initializing) is not proof of health.
// https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/monitoring-system-instance-status-check.html
func JudgePrimary(ctx context.Context, c *cloud.Clients, holder string) (healthy bool, why string, err error) {
	v, err := cloud.JudgeHolder(ctx, c, holder)
	if err != nil {
		return false, "", err
	}
	if v.MayTake {
		return false, v.Why, nil
	}
	system, instance, err := statusChecks(ctx, c.EC2, holder)
	if err != nil {
		return false, "", err
	}
	if system == string(ec2types.SummaryStatusOk) && instance == string(ec2types.SummaryStatusOk) {
		return true, fmt.Sprintf("%s is running and its status checks pass", holder), nil
	}
	return false, fmt.Sprintf("%s is running but its status checks are system=%s, instance=%s", holder, system, instance), nil
}

// failedPrimary checks the instance an event reports as failed: it must be a primary (of group, when
// given). Anything else means the event is not about a failover handover runs (ErrNotConcerned).
func failedPrimary(ctx context.Context, c cloud.EC2, id, group string) (MemberInstance, error) {
	m, found, err := DescribeMember(ctx, c, id)
	switch {
	case err != nil:
		return m, err
	case !found:
		return m, NotConcerned(fmt.Sprintf("instance %s does not exist (or no longer): nothing to fail over from", id))
	case m.Group == "":
		return m, NotConcerned(fmt.Sprintf("instance %s has no %s tag: it is not part of a handover group", id, cloud.TagGroup))
	case group != "" && m.Group != group:
		return m, NotConcerned(fmt.Sprintf("instance %s is in group %s, not %s", id, m.Group, group))
	case m.Role != RolePrimary:
		return m, NotConcerned(fmt.Sprintf("instance %s is tagged %s=%s, not %s: only a primary is failed over from", id, cloud.TagRole, orDash(m.Role), RolePrimary))
	}
	return m, nil
}

// namedTarget checks a target given by ID: it must exist, be in group (when given) and not be going away.
func namedTarget(ctx context.Context, c cloud.EC2, id, group string) (MemberInstance, error) {
	m, found, err := DescribeMember(ctx, c, id)
	switch {
	case err != nil:
		return m, err
	case !found:
		return m, fail.Precondition(fmt.Sprintf("target instance %s does not exist: check --to", id), nil)
	case m.Group == "":
		return m, fail.Precondition(fmt.Sprintf("target %s has no %s tag: tag it with its group first", id, cloud.TagGroup), nil)
	case group != "" && m.Group != group:
		return m, fail.Precondition(fmt.Sprintf("target %s is in group %s, not %s: name an instance of group %s", id, m.Group, group, group), nil)
	case m.gone():
		return m, fail.Precondition(fmt.Sprintf("target %s is %s: name a live instance of group %s", id, m.State, m.Group), nil)
	}
	return m, nil
}

// decideMove says whether the address moves to target: not when it is there already; yes when it is free
// or its holder is not healthy (judgePrimary); a healthy holder keeps it unless force, and that refusal
// is ErrPrimaryHealthy (exit 3).
func decideMove(ctx context.Context, c *cloud.Clients, addr cloud.Address, target string, force bool) (move bool, why string, err error) {
	switch addr.InstanceID {
	case target:
		return false, "", nil
	case "":
		return true, "the address is not associated", nil
	}
	healthy, why, err := JudgePrimary(ctx, c, addr.InstanceID)
	if err != nil {
		return false, "", err
	}
	if healthy && !force {
		return false, "", &reasonErr{reason: ErrPrimaryHealthy, err: fail.Precondition(fmt.Sprintf(
			"Elastic IP %s (%s) is held by %s, which is healthy (%s): refusing to move it; pass --force to move it anyway",
			addr.PublicIP, addr.AllocationID, addr.InstanceID, why), nil)}
	}
	if healthy {
		why += "; moving it anyway (force)"
	}
	return true, why, nil
}

// Failover moves the group's Elastic IP to the standby (or r.To): observe the failed instance, the target,
// the address and its holder; refuse what must not be done; start the target if it is stopped; associate
// and verify with ClaimAddress; swap the role tags if asked. Rerunning is safe: an address already on a
// running target makes no mutating call.
func Run(ctx context.Context, log *slog.Logger, c *cloud.Clients, r Request) (Result, error) {
	if err := r.Validate(); err != nil {
		return Result{}, err
	}
	if r.StartTimeout == 0 {
		r.StartTimeout = DefaultStartTimeout
	}
	if r.StatusTimeout == 0 {
		r.StatusTimeout = DefaultStatusTimeout
	}
	f := &run{c: c, r: r}
	if err := f.observe(ctx, log); err != nil {
		return f.res, err
	}
	// The failed instance no longer holds the address: an earlier delivery of the same event, another
	// event about the same failure, or an operator moved it already. This is decided before looking for a
	// standby, which after a role swap may not exist until an operator provides one.
	if holder := f.addr.InstanceID; r.From != "" && holder != "" && holder != r.From && holder != r.To {
		return f.nothingToDo(ctx)
	}
	if err := f.pickTarget(ctx); err != nil {
		return f.res, err
	}
	move, why, err := decideMove(ctx, c, f.addr, f.target.ID, r.Force)
	if err != nil {
		return f.res, err
	}
	if !move {
		f.res.Action = Already
	}
	if r.DryRun {
		f.res.Action = Planned
		f.res.Plan = failoverPlan(r, f.target, f.from, f.addr, f.members, why, move)
		return f.res, nil
	}
	if move, why, err = f.startTarget(ctx, move, why); err != nil {
		return f.res, err
	}
	if move {
		if err := f.moveAddress(ctx, why); err != nil {
			return f.res, err
		}
	}
	if f.res.Action == Already {
		f.log.Info("the Elastic IP is already on the target", logkey.PublicIP, f.addr.PublicIP)
	}
	if r.SwapRoles {
		swapped, err := swapRoles(ctx, f.log, c.EC2, f.target, f.members)
		f.res.RolesSwapped = swapped
		if err != nil {
			return f.res, err
		}
	}
	return f.res, nil
}

// run is one failover: what it was asked and what it has found.
type run struct {
	c            *cloud.Clients
	r            Request
	base, log    *slog.Logger // base for the shared steps (they add their own keys), log for this one's
	from, target MemberInstance
	members      []MemberInstance
	addr         cloud.Address
	res          Result
}

// observe reads the failed primary and the named target (each settles the group when it was not given),
// the group's members and its address.
func (f *run) observe(ctx context.Context, log *slog.Logger) error {
	var err error
	if f.r.From != "" {
		if f.from, err = failedPrimary(ctx, f.c.EC2, f.r.From, f.r.Group); err != nil {
			return err
		}
		f.r.Group = f.from.Group
	}
	if f.r.To != "" {
		if f.target, err = namedTarget(ctx, f.c.EC2, f.r.To, f.r.Group); err != nil {
			return err
		}
		f.r.Group = f.target.Group
	}
	f.base = log.With(logkey.Group, f.r.Group)
	if f.members, err = groupMembers(ctx, f.c.EC2, f.r.Group); err != nil {
		return err
	}
	if f.addr, err = cloud.FindGroupAddress(ctx, f.c.EC2, f.r.Group); err != nil {
		return err
	}
	f.res = Result{Group: f.r.Group, AllocationID: f.addr.AllocationID, PublicIP: f.addr.PublicIP}
	return nil
}

// nothingToDo ends a failover whose failed instance no longer holds the address, finishing a role swap an
// earlier run began.
func (f *run) nothingToDo(ctx context.Context) (Result, error) {
	holder := f.addr.InstanceID
	f.res.Action, f.res.Target = NothingToDo, holder
	f.res.Reason = fmt.Sprintf("Elastic IP %s is on %s, not on the failed instance %s", f.addr.PublicIP, holder, f.r.From)
	f.base.Info("nothing to do", logkey.Step, "failover", logkey.Allocation, f.addr.AllocationID, logkey.Reason, f.res.Reason)
	var err error
	if f.r.SwapRoles && !f.r.DryRun {
		f.res.RolesSwapped, err = finishRoleSwap(ctx, f.base, f.c.EC2, f.from, holder, f.members)
	}
	return f.res, err
}

// pickTarget settles the target: the one named, or the group's standby.
func (f *run) pickTarget(context.Context) error {
	if f.r.To == "" {
		t, err := PickStandby(f.r.Group, f.members)
		if err != nil {
			return err
		}
		f.target = t
	}
	f.res.Target = f.target.ID
	if f.addr.InstanceID != f.target.ID {
		f.res.Previous = f.addr.InstanceID
	}
	f.log = f.base.With(logkey.Step, "failover", logkey.Instance, f.target.ID, logkey.AZ, f.target.AZ, logkey.Allocation, f.addr.AllocationID)
	return nil
}

// startTarget makes the target run (and pass its status checks when asked). The world may have changed
// while it started (the primary came back, another invocation or an operator moved the address), so the
// move is decided again on a fresh look.
func (f *run) startTarget(ctx context.Context, move bool, why string) (bool, string, error) {
	tlog := f.base.With(logkey.Instance, f.target.ID)
	started, err := ensureRunning(ctx, tlog, f.c.EC2, f.target.ID, f.r.StartTimeout)
	f.res.Started = started
	if err != nil {
		return false, "", err
	}
	if f.r.WaitStatusOK {
		if err := waitStatusOK(ctx, tlog, f.c.EC2, f.target.ID, f.r.StatusTimeout); err != nil {
			return false, "", err
		}
	}
	if !move || !(started || f.r.WaitStatusOK) {
		return move, why, nil
	}
	if f.addr, err = cloud.FindGroupAddress(ctx, f.c.EC2, f.r.Group); err != nil {
		return false, "", err
	}
	f.res.Previous = ""
	if f.addr.InstanceID != f.target.ID {
		f.res.Previous = f.addr.InstanceID
	}
	if move, why, err = decideMove(ctx, f.c, f.addr, f.target.ID, f.r.Force); err != nil {
		if f.res.Started {
			f.log.Warn("the target was started but the address stays where it is; stop the target if it is not needed", logkey.Error, err.Error())
		}
		return false, "", err
	}
	if !move {
		f.res.Action = Already
	}
	return move, why, nil
}

// moveAddress moves the address to the target. The decision made before is the takeover's authority:
// ClaimAddress associates with AllowReassociation when the address is held, then verifies with a fresh
// Describe.
func (f *run) moveAddress(ctx context.Context, why string) error {
	f.log.Info("moving the Elastic IP", logkey.PublicIP, f.addr.PublicIP, logkey.From, orDash(f.addr.InstanceID), logkey.Reason, why)
	cr, err := cloud.ClaimAddress(ctx, f.base, f.c, cloud.ClaimSpec{Group: f.r.Group, InstanceID: f.target.ID, Takeover: true, TakeoverFlag: "--force", Wait: failoverClaimBound})
	if err != nil {
		return err
	}
	f.res.Action = Moved
	if cr.Action == "already-held" {
		f.res.Action = Already
	}
	return nil
}

// failoverPlan is what a dry run prints: one line per step that would change something.
func failoverPlan(r Request, target, from MemberInstance, addr cloud.Address, members []MemberInstance, moveWhy string, move bool) []string {
	var plan []string
	if from.ID != "" {
		plan = append(plan, fmt.Sprintf("failed primary: %s", from))
	}
	plan = append(plan, fmt.Sprintf("target: %s", target))
	switch target.State {
	case string(ec2types.InstanceStateNameStopped), string(ec2types.InstanceStateNameStopping):
		plan = append(plan, fmt.Sprintf("start %s and wait up to %s until it is running", target.ID, r.StartTimeout))
	case string(ec2types.InstanceStateNamePending):
		plan = append(plan, fmt.Sprintf("wait up to %s until %s is running", r.StartTimeout, target.ID))
	}
	if r.WaitStatusOK {
		plan = append(plan, fmt.Sprintf("wait up to %s until both status checks of %s pass", r.StatusTimeout, target.ID))
	}
	if move {
		plan = append(plan, fmt.Sprintf("associate Elastic IP %s (%s) with %s (from %s: %s), allowing reassociation, and verify",
			addr.PublicIP, addr.AllocationID, target.ID, orDash(addr.InstanceID), moveWhy))
	} else {
		plan = append(plan, fmt.Sprintf("Elastic IP %s (%s) is already on %s", addr.PublicIP, addr.AllocationID, target.ID))
	}
	if r.SwapRoles {
		for _, step := range RoleChanges(target, members) {
			plan = append(plan, fmt.Sprintf("tag %s %s=%s", step.id, cloud.TagRole, step.role))
		}
	}
	return plan
}

// ensureRunning brings the target to running: a stopped instance is started, a stopping one is waited for
// and then started, a pending one is waited for. started reports whether this call started it.
// https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_StartInstances.html
func ensureRunning(ctx context.Context, log *slog.Logger, c cloud.EC2, id string, bound time.Duration) (started bool, err error) {
	check := func(ctx context.Context) (bool, string, error) {
		m, found, err := DescribeMember(ctx, c, id)
		if err != nil {
			return false, "", err
		}
		if !found {
			return false, "", backoff.Permanent(fail.Precondition(fmt.Sprintf("target %s does not exist any more", id), nil))
		}
		switch m.State {
		case string(ec2types.InstanceStateNameRunning):
			return true, "", nil
		case string(ec2types.InstanceStateNamePending):
			return false, "pending", nil
		case string(ec2types.InstanceStateNameStopping):
			return false, "stopping (it is started once stopped)", nil
		case string(ec2types.InstanceStateNameStopped):
			_, err := c.StartInstances(ctx, &ec2.StartInstancesInput{InstanceIds: []string{id}})
			switch {
			case err == nil:
				if !started {
					log.Info("starting the target", logkey.Step, "failover", logkey.State, m.State)
				}
				started = true
				return false, "starting", nil
			case cloud.HasCode(err, cloud.CodeIncorrectInstanceSt):
				// Describe lags the instance's real state (eventual consistency): look again.
				return false, "stopped, not startable yet", nil
			case cloud.HasCode(err, cloud.CodeInsufficientCapacity):
				return false, "", backoff.Permanent(&fail.Error{Code: fail.CodeFailed, Msg: fmt.Sprintf(
					"EC2 has no capacity to start %s in %s now: rerun later, or fail over to an instance of another type or AZ with --to", id, m.AZ), Err: err})
			case cloud.IsThrottled(err):
				return false, "start throttled", err
			}
			return false, "", backoff.Permanent(fmt.Errorf("start %s: %w", id, err))
		default: // shutting-down, terminated
			return false, "", backoff.Permanent(fail.Precondition(fmt.Sprintf("target %s is %s: it cannot take over", id, m.State), nil))
		}
	}
	start := time.Now()
	err = cloud.Poll(ctx, log, wait.Spec{What: "instance " + id + " running", Bound: bound, Step: "failover"}, check)
	if err == nil && started {
		log.Info("the target is running", logkey.Step, "failover", logkey.Elapsed, time.Since(start).Round(time.Millisecond).String())
	}
	if errors.Is(err, wait.ErrTimeout) {
		return started, &fail.Error{Code: fail.CodeFailed, Msg: fmt.Sprintf("target %s is not running after %s; the address was not moved: check the instance, then rerun (or raise --start-timeout)", id, bound), Err: err}
	}
	return started, err
}

// statusChecks returns the system and instance status check summaries of an instance ("ok", "impaired",
// "initializing", ...; "unknown" when EC2 reports none, as for an instance that is not running).
func statusChecks(ctx context.Context, c cloud.EC2, id string) (system, instance string, err error) {
	out, err := c.DescribeInstanceStatus(ctx, &ec2.DescribeInstanceStatusInput{InstanceIds: []string{id}, IncludeAllInstances: aws.Bool(true)})
	if err != nil {
		return "", "", fmt.Errorf("describe status checks of %s: %w", id, err)
	}
	system, instance = "unknown", "unknown"
	for _, s := range out.InstanceStatuses {
		if s.SystemStatus != nil {
			system = string(s.SystemStatus.Status)
		}
		if s.InstanceStatus != nil {
			instance = string(s.InstanceStatus.Status)
		}
	}
	return system, instance, nil
}

// waitStatusOK waits until both status checks of a running instance pass.
// https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_DescribeInstanceStatus.html
func waitStatusOK(ctx context.Context, log *slog.Logger, c cloud.EC2, id string, bound time.Duration) error {
	check := func(ctx context.Context) (bool, string, error) {
		system, instance, err := statusChecks(ctx, c, id)
		if err != nil {
			return false, "", err
		}
		done := system == string(ec2types.SummaryStatusOk) && instance == string(ec2types.SummaryStatusOk)
		return done, "system " + system + ", instance " + instance, nil
	}
	start := time.Now()
	err := cloud.Poll(ctx, log, wait.Spec{What: "status checks of " + id, Bound: bound, Step: "failover", Initial: time.Second, Max: 5 * time.Second}, check)
	if errors.Is(err, wait.ErrTimeout) {
		return &fail.Error{Code: fail.CodeFailed, Msg: fmt.Sprintf("the status checks of %s did not pass within %s; the address was not moved: check the instance, then rerun (or raise --status-timeout, or drop --wait-status-ok)", id, bound), Err: err}
	}
	if err == nil {
		log.Info("status checks of "+id+" pass", logkey.Step, "failover", logkey.Elapsed, time.Since(start).Round(time.Millisecond).String())
	}
	return err
}

type RoleChange struct{ id, role string }

// RoleChanges lists the tags that make target the primary and every other live primary of the group a
// standby. The target is promoted first: if the second call is lost, a rerun finds the address already on
// the target and finishes the demotion, and no instance is left a standby it should not be.
func RoleChanges(target MemberInstance, members []MemberInstance) []RoleChange {
	var out []RoleChange
	if target.Role != RolePrimary {
		out = append(out, RoleChange{target.ID, RolePrimary})
	}
	for _, m := range members {
		if m.ID != target.ID && m.Role == RolePrimary && !m.gone() {
			out = append(out, RoleChange{m.ID, RoleStandby})
		}
	}
	return out
}

// swapRoles applies roleChanges. A terminated former primary is left alone: it can never be a standby.
func swapRoles(ctx context.Context, log *slog.Logger, c cloud.EC2, target MemberInstance, members []MemberInstance) (bool, error) {
	changes := RoleChanges(target, members)
	for _, ch := range changes {
		_, err := c.CreateTags(ctx, &ec2.CreateTagsInput{
			Resources: []string{ch.id},
			Tags:      []ec2types.Tag{{Key: aws.String(cloud.TagRole), Value: aws.String(ch.role)}},
		})
		if err != nil {
			return false, fmt.Errorf("tag %s %s=%s (rerun to finish swapping roles): %w", ch.id, cloud.TagRole, ch.role, err)
		}
		log.Info("role tag set", "tagged", ch.id, "role", ch.role)
	}
	return len(changes) > 0, nil
}

// finishRoleSwap completes a role swap that an earlier run began but did not finish (swapRoles promotes
// the target first): when the instance holding the address is already tagged primary, the failed
// primary is tagged standby, unless it is going away.
func finishRoleSwap(ctx context.Context, log *slog.Logger, c cloud.EC2, failed MemberInstance, holder string, members []MemberInstance) (bool, error) {
	for _, m := range members {
		if m.ID == holder && m.Role == RolePrimary && !failed.gone() {
			return swapRoles(ctx, log, c, m, []MemberInstance{failed})
		}
	}
	return false, nil
}

// orDash shows an empty state as "-".
func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
