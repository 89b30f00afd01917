package imds

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// ScheduledEvent is one of the instance's scheduled events, as events/maintenance/scheduled lists them:
// a stop, retirement, reboot or maintenance EC2 has announced for the instance.
// https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/monitoring-instances-status-check_sched.html,
// https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/instancedata-data-categories.html
type ScheduledEvent struct {
	Code        string // instance-stop, instance-retirement, system-reboot, system-maintenance, instance-reboot
	Description string
	State       string // active, completed, canceled
	EventID     string
	NotBefore   time.Time // the earliest time the event starts
	NotAfter    time.Time // zero when not given
}

// Event codes, as IMDS and DescribeInstanceStatus name them
// (https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_InstanceStatusEvent.html).
const (
	EventInstanceStop       = "instance-stop"
	EventInstanceRetirement = "instance-retirement"
	EventSystemReboot       = "system-reboot"
	EventSystemMaintenance  = "system-maintenance"
	EventInstanceReboot     = "instance-reboot"
)

// Pending reports whether the event is still to come: not completed or canceled. IMDS says so in State;
// a completed or canceled event's description starts with "[Completed]" or "[Canceled]" as well, which is
// the only sign DescribeInstanceStatus gives, so either counts.
func (e ScheduledEvent) Pending() bool {
	switch strings.ToLower(e.State) {
	case "completed", "canceled", "cancelled":
		return false
	}
	d := strings.ToLower(e.Description)
	return !strings.HasPrefix(d, "[completed]") && !strings.HasPrefix(d, "[canceled]")
}

// eventTimeLayout is how IMDS writes an event's times: "21 Jan 2019 09:00:43 GMT" (the page's example;
// amazon-ec2-metadata-mock writes the same).
const eventTimeLayout = "2 Jan 2006 15:04:05 GMT"

// parseEventTime reads an event time in IMDS's layout, or RFC 3339; "" is the zero time.
func parseEventTime(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(eventTimeLayout, s); err == nil {
		return t, nil
	}
	return time.Parse(time.RFC3339, s)
}

// ScheduledEvents returns the instance's scheduled events (none when the path is absent).
func (c *Client) ScheduledEvents(ctx context.Context) ([]ScheduledEvent, error) {
	const path = "events/maintenance/scheduled"
	s, err := c.Get(ctx, path)
	if errors.Is(err, ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	evs, err := ParseScheduledEvents([]byte(s))
	if err != nil {
		// IMDS answered with a document we cannot read: an answer, not an outage.
		return nil, &callError{endpoint: c.endpoint, path: "/latest/meta-data/" + path, status: http.StatusOK, err: err}
	}
	return evs, nil
}

// ParseScheduledEvents reads events/maintenance/scheduled: a JSON list of events, each with Code,
// Description, State, EventId, NotBefore and NotAfter (and NotBeforeDeadline, not used). An event without a
// code or a start time is an error: handover cannot tell when to act on it.
func ParseScheduledEvents(b []byte) ([]ScheduledEvent, error) {
	if strings.TrimSpace(string(b)) == "" {
		return nil, nil
	}
	var raw []struct {
		Code, Description, State, EventID string
		NotBefore, NotAfter               string
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, fmt.Errorf("scheduled events: %w", err)
	}
	out := make([]ScheduledEvent, 0, len(raw))
	for i, r := range raw {
		if r.Code == "" {
			return nil, fmt.Errorf("scheduled event %d has no Code", i)
		}
		nb, err := parseEventTime(r.NotBefore)
		if err != nil || nb.IsZero() {
			return nil, fmt.Errorf("scheduled event %s (%s): NotBefore %q is not a time", r.EventID, r.Code, r.NotBefore)
		}
		na, err := parseEventTime(r.NotAfter)
		if err != nil {
			return nil, fmt.Errorf("scheduled event %s (%s): NotAfter %q is not a time", r.EventID, r.Code, r.NotAfter)
		}
		out = append(out, ScheduledEvent{Code: r.Code, Description: r.Description, State: r.State, EventID: r.EventID, NotBefore: nb, NotAfter: na})
	}
	return out, nil
}
