package main

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/handover/handover/failover"
)

// The events this function accepts, as documented by AWS (samples in testdata/):
//
//   - a CloudWatch alarm's Lambda action: {"source":"aws.cloudwatch","alarmArn":...,"alarmData":{...}}
//     https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/AlarmThatSendsEmail.html#Lambda-action-payload
//   - the same state change through EventBridge: detail-type "CloudWatch Alarm State Change"
//     https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/cloudwatch-and-eventbridge.html
//   - an EC2 state change through EventBridge: detail-type "EC2 Instance State-change Notification"
//     https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/monitoring-instance-state-changes.html

// envelope holds the fields of every accepted shape; the JSON decides which are set.
type envelope struct {
	// EventBridge
	ID         string          `json:"id"`
	DetailType string          `json:"detail-type"`
	Source     string          `json:"source"`
	Time       string          `json:"time"`
	Detail     json.RawMessage `json:"detail"`
	// Alarm Lambda action
	AlarmArn  string       `json:"alarmArn"`
	AlarmData *alarmDetail `json:"alarmData"`
}

// alarmDetail is alarmData of a Lambda action and detail of an EventBridge alarm event: the same shape.
type alarmDetail struct {
	AlarmName     string     `json:"alarmName"`
	State         alarmState `json:"state"`
	PreviousState alarmState `json:"previousState"`
	Configuration struct {
		Metrics []struct {
			MetricStat *struct {
				Metric struct {
					Namespace  string            `json:"namespace"`
					Name       string            `json:"name"`
					Dimensions map[string]string `json:"dimensions"`
				} `json:"metric"`
			} `json:"metricStat"`
		} `json:"metrics"`
	} `json:"configuration"`
}

type alarmState struct {
	Value     string `json:"value"` // OK, ALARM, INSUFFICIENT_DATA
	Reason    string `json:"reason"`
	Timestamp string `json:"timestamp"`
}

type ec2StateDetail struct {
	InstanceID string `json:"instance-id"`
	State      string `json:"state"`
}

const (
	detailTypeAlarm    = "CloudWatch Alarm State Change"
	detailTypeEC2State = "EC2 Instance State-change Notification"
)

// trigger is an event reduced to what failover needs. Ignore is set when the event must not fail anything
// over, and says why.
type trigger struct {
	Describe string    // one phrase for the log: `alarm "x" ALARM`, `EC2 i-... terminated`
	ID       string    // EventBridge event ID (repeated on redelivery), or the alarm ARN
	Time     time.Time // when the state changed; zero when the event carries no readable time
	Failed   string    // the instance reported as failed
	// Force: the event itself says the primary is in trouble, so a holder that still looks healthy to EC2
	// (running, status checks ok: a CPU pinned at 100%, a hung service) is moved away from anyway.
	Force  bool
	Ignore string
}

// failoverStates are the EC2 states that mean the primary is going or gone. pending and running mean it
// is coming back: never a reason to move the address, whatever order the events arrive in.
var failoverStates = map[string]bool{"stopping": true, "stopped": true, "shutting-down": true, "terminated": true}

// decode reads an event and decides whether it asks for a failover.
//
// Which events force: an alarm in ALARM does, because the alarm is the operator's own definition of
// trouble and EC2 may well report the instance running with status checks ok. An EC2 state change does
// not need to: a stopping or terminated primary is not healthy, so it is moved away from without force;
// and when the primary is running with status checks ok by the time the event is handled, the event is
// stale (delivered late, or the instance was started again), and the address stays.
func decode(raw []byte) (trigger, error) {
	var env envelope
	if err := json.Unmarshal(raw, &env); err != nil {
		return trigger{}, fmt.Errorf("event is not JSON: %w", err)
	}
	switch {
	case env.AlarmData != nil:
		return alarmTrigger(*env.AlarmData, env.AlarmArn, env.Time), nil
	case env.DetailType == detailTypeAlarm:
		var d alarmDetail
		if err := json.Unmarshal(env.Detail, &d); err != nil {
			return trigger{}, fmt.Errorf("%s event %s: detail: %w", detailTypeAlarm, env.ID, err)
		}
		return alarmTrigger(d, env.ID, env.Time), nil
	case env.DetailType == detailTypeEC2State:
		var d ec2StateDetail
		if err := json.Unmarshal(env.Detail, &d); err != nil {
			return trigger{}, fmt.Errorf("%s event %s: detail: %w", detailTypeEC2State, env.ID, err)
		}
		t := trigger{Describe: fmt.Sprintf("EC2 %s %s", d.InstanceID, d.State), ID: env.ID, Time: parseEventTime(env.Time), Failed: d.InstanceID}
		switch {
		case d.InstanceID == "":
			t.Ignore = "the event names no instance"
		case !failover.ValidInstanceID(d.InstanceID):
			t.Ignore = fmt.Sprintf("the event's instance-id %q is not an instance ID", d.InstanceID)
		case !failoverStates[d.State]:
			t.Ignore = fmt.Sprintf("state %q does not mean the instance failed", d.State)
		}
		return t, nil
	}
	what := strings.TrimSpace(env.Source + " " + env.DetailType)
	if what == "" {
		what = "an event of unknown shape"
	}
	return trigger{Describe: what, ID: env.ID, Ignore: "not a CloudWatch alarm or EC2 state-change event"}, nil
}

func alarmTrigger(d alarmDetail, id, envTime string) trigger {
	t := trigger{Describe: fmt.Sprintf("alarm %q %s", d.AlarmName, d.State.Value), ID: id, Force: true}
	t.Time = parseEventTime(d.State.Timestamp)
	if t.Time.IsZero() {
		t.Time = parseEventTime(envTime)
	}
	if d.State.Value != "ALARM" {
		t.Ignore = fmt.Sprintf("the alarm is %s, not ALARM", orDash(d.State.Value))
		return t
	}
	ids := map[string]bool{}
	for _, m := range d.Configuration.Metrics {
		if m.MetricStat != nil && m.MetricStat.Metric.Dimensions["InstanceId"] != "" {
			ids[m.MetricStat.Metric.Dimensions["InstanceId"]] = true
		}
	}
	switch len(ids) {
	case 0:
		t.Ignore = "the alarm has no metric with an InstanceId dimension (composite and instance-less alarms cannot say which instance failed)"
	case 1:
		for id := range ids {
			t.Failed = id
		}
		if !failover.ValidInstanceID(t.Failed) {
			// Failing the invocation would only have Lambda retry an event that is wrong every time.
			t.Ignore = fmt.Sprintf("the alarm's InstanceId dimension %q is not an instance ID", t.Failed)
		}
	default:
		list := make([]string, 0, len(ids))
		for id := range ids {
			list = append(list, id)
		}
		sort.Strings(list)
		t.Ignore = "the alarm's metrics name several instances (" + strings.Join(list, ", ") + "): use one alarm per instance"
	}
	return t
}

// parseEventTime reads EventBridge's RFC 3339 times and CloudWatch's "2019-10-02T17:04:40.989+0000".
func parseEventTime(s string) time.Time {
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05.000-0700", "2006-01-02T15:04:05-0700"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t
		}
	}
	return time.Time{}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
