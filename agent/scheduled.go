package agent

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/handover/handover/imds"
)

// Scheduled events: EC2 announces a stop, a retirement, a reboot or maintenance of the instance ahead of
// time in instance metadata (events/maintenance/scheduled), typically days or weeks before NotBefore
// (https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/monitoring-instances-status-check_sched.html).
//
// Which events call for a replacement:
//   - instance-stop and instance-retirement: EC2 stops (or, for instance-store, terminates) the instance
//     on degraded hardware. In an Auto Scaling group the stopped instance fails its health check and is
//     replaced anyway, at EC2's time, with no down run (the instance is already stopped): the replacement
//     then has to snapshot the volume where it is. Asking the group first runs the ordinary hand-over
//     (termination hook, down's final snapshot) at handover's time.
//   - system-reboot, instance-reboot and system-maintenance are not, unless --replace-for lists them: the instance comes back on the same
//     host or after a brief power or network interruption, with its volume still attached and its address
//     associated, and `up` at boot finds everything in place. A replacement would cost more downtime (stop
//     the service, snapshot, restore in another zone) than the reboot it avoids. An operator who prefers to
//     move can reboot early (reboot migration) or run `handover down` through the group.
//
// Completed and canceled events are ignored. An event whose NotBefore has passed and that is still active
// is acted on at once.

// defaultReplaceBefore is --replace-before: ahead of the event by an hour leaves the hand-over (a minute or
// two) many retries' worth of room should the group not launch the replacement at once, without moving the
// instance days before it has to.
const defaultReplaceBefore = leadTime(time.Hour)

// eventCodes is --replace-for: the scheduled events that call for a replacement. The default is the two
// that take the instance down (above); an operator who would rather move than sit through a reboot adds
// system-reboot (or instance-reboot, system-maintenance).
type eventCodes map[string]bool

// scheduledEventCodes are the codes EC2 announces, in the order they are listed.
var scheduledEventCodes = []string{imds.EventInstanceStop, imds.EventInstanceRetirement, imds.EventSystemReboot, imds.EventInstanceReboot, imds.EventSystemMaintenance}

func defaultReplaceFor() eventCodes {
	return eventCodes{imds.EventInstanceStop: true, imds.EventInstanceRetirement: true}
}

func (c *eventCodes) String() string {
	if c == nil || *c == nil {
		return strings.Join([]string{imds.EventInstanceStop, imds.EventInstanceRetirement}, ",")
	}
	var out []string
	for _, code := range scheduledEventCodes {
		if (*c)[code] {
			out = append(out, code)
		}
	}
	for code := range *c {
		if !slices.Contains(scheduledEventCodes, code) {
			out = append(out, code) // unknown: validate names it
		}
	}
	return strings.Join(out, ",")
}

// Set takes a comma-separated list of event codes; an unknown one is kept for validate, which names where
// the value came from.
func (c *eventCodes) Set(v string) error {
	*c = eventCodes{}
	for _, code := range strings.Split(v, ",") {
		if code = strings.ToLower(strings.TrimSpace(code)); code != "" {
			(*c)[code] = true
		}
	}
	return nil
}

// check says what is wrong with the list: empty, or a code EC2 does not announce.
func (c eventCodes) check() error {
	if len(c) == 0 {
		return errors.New("want one or more of " + strings.Join(scheduledEventCodes, ", ") + " (use --replace-before off to read no events)")
	}
	for code := range c {
		if !slices.Contains(scheduledEventCodes, code) {
			return fmt.Errorf("%q is not a scheduled event code; want one or more of %s", code, strings.Join(scheduledEventCodes, ", "))
		}
	}
	return nil
}

// leadTime is --replace-before: a duration, or off (negative).
type leadTime time.Duration

const (
	leadTimeOff     = leadTime(-1)
	leadTimeInvalid = leadTime(-2) // kept for validate, which names where the value came from
)

func (l *leadTime) String() string {
	if l == nil {
		return time.Duration(defaultReplaceBefore).String()
	}
	if *l < 0 {
		return "off"
	}
	return time.Duration(*l).String()
}

// Set takes a non-negative duration or off (also false, 0 is "at NotBefore").
func (l *leadTime) Set(v string) error {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "off", "false", "none":
		*l = leadTimeOff
		return nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		*l = leadTimeInvalid
		return nil
	}
	*l = leadTime(d)
	return nil
}

// scheduledMonitor watches the instance's scheduled events and, before before NotBefore of the first one
// that takes the instance down, reports it for a replacement.
type scheduledMonitor struct {
	md     scheduledEventsReader
	before time.Duration
	codes  eventCodes // --replace-for; nil: the default
	now    func() time.Time
}

func (scheduledMonitor) source() string { return "scheduled" }

// replaces reports whether the event calls for a replacement (--replace-for).
func (m scheduledMonitor) replaces(code string) bool {
	if m.codes == nil {
		return defaultReplaceFor()[code]
	}
	return m.codes[code]
}

func (m scheduledMonitor) observe(ctx context.Context) (string, *notice, error) {
	evs, err := m.md.ScheduledEvents(ctx)
	if err != nil {
		return "", nil, err
	}
	var down, other []imds.ScheduledEvent
	for _, e := range evs {
		switch {
		case !e.Pending():
		case m.replaces(e.Code):
			down = append(down, e)
		default:
			other = append(other, e)
		}
	}
	if len(down) == 0 {
		if len(other) == 0 {
			return "no scheduled event", nil, nil
		}
		var parts []string
		for _, e := range other {
			parts = append(parts, e.Code+" at "+e.NotBefore.UTC().Format(time.RFC3339))
		}
		return strings.Join(parts, ", ") + " (not in --replace-for: no replacement)", nil, nil
	}
	sort.Slice(down, func(i, j int) bool { return down[i].NotBefore.Before(down[j].NotBefore) })
	e := down[0]
	at := e.NotBefore.UTC().Format(time.RFC3339)
	from := e.NotBefore.Add(-m.before)
	state := fmt.Sprintf("%s %s at %s", e.Code, orDash(e.EventID), at)
	if m.now().Before(from) {
		return state + ", replacement asked from " + from.UTC().Format(time.RFC3339), nil, nil
	}
	key := e.EventID
	if key == "" {
		key = e.Code + " " + at
	}
	return state, &notice{Source: "scheduled", Detail: fmt.Sprintf("%s scheduled at %s (%s)", e.Code, at, e.Description),
		Occ: occasion{Kind: "scheduled", Key: "scheduled " + key}, Run: runReplaceEvent}, nil
}
