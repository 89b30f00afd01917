package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/handover/handover/cloud"
	"github.com/handover/handover/failover"
	"github.com/handover/handover/internal/fail"
	"github.com/handover/handover/internal/logkey"
)

// handler turns events into calls of failover.Run, the code `handover failover` runs.
type handler struct {
	cfg     config
	clients *cloud.Clients
	log     *slog.Logger
	now     func() time.Time
}

// Outcome is what one invocation decided, returned to the caller (visible in a test invoke) and logged.
type Outcome struct {
	Event  string           `json:"event"`
	Action string           `json:"action"` // "ignored", or the failover's action: moved, already, nothing-to-do, planned
	Reason string           `json:"reason,omitempty"`
	Result *failover.Result `json:"result,omitempty"`
}

const actionIgnored = "ignored"

// handle processes one event. It returns an error only when a failover that the event asks for could not
// be done (no standby, standby terminated, AWS failure): Lambda then retries the invocation, and each retry
// converges from where the last one stopped. Events that do not ask for a failover, or no longer do
// (duplicates, late deliveries, another group's instances), are logged and acknowledged.
func (h *handler) handle(ctx context.Context, raw json.RawMessage) (Outcome, error) {
	t, err := decode(raw)
	if err != nil {
		// A malformed event will be malformed on every retry: log it and let it go.
		h.log.Error("ignored an event that cannot be read", logkey.Error, err.Error())
		return Outcome{Action: actionIgnored, Reason: err.Error()}, nil
	}
	log := h.log.With(logkey.Event, t.Describe, "event_id", t.ID)
	out := Outcome{Event: t.Describe, Action: actionIgnored}
	if t.Ignore == "" && h.cfg.MaxEventAge > 0 && !t.Time.IsZero() {
		if age := h.now().Sub(t.Time); age > h.cfg.MaxEventAge {
			t.Ignore = fmt.Sprintf("the event is %s old, older than HANDOVER_MAX_EVENT_AGE=%s: a late redelivery", age.Round(time.Second), h.cfg.MaxEventAge)
		}
	}
	if t.Ignore != "" {
		out.Reason = t.Ignore
		log.Info("ignored", logkey.Reason, t.Ignore)
		return out, nil
	}

	req := failover.Request{
		Group:         h.cfg.Group,
		From:          t.Failed,
		Force:         t.Force,
		WaitStatusOK:  h.cfg.WaitStatusOK,
		SwapRoles:     h.cfg.SwapRoles,
		DryRun:        h.cfg.DryRun,
		StartTimeout:  h.cfg.StartTimeout,
		StatusTimeout: h.cfg.StatusTimeout,
	}
	log.Info("the event reports a failed instance", "failed_instance", t.Failed, "force", t.Force)
	res, err := failover.Run(ctx, log, h.clients, req)
	switch {
	case errors.Is(err, failover.ErrNotConcerned):
		out.Reason = err.Error()
		log.Info("ignored", logkey.Reason, out.Reason)
		return out, nil
	case errors.Is(err, failover.ErrPrimaryHealthy):
		// Only events that do not force get here: an EC2 state change about a primary that is running
		// with status checks ok again.
		out.Reason = "stale event: " + err.Error()
		log.Info("ignored", logkey.Reason, out.Reason)
		return out, nil
	case err != nil:
		log.Error("failover failed", logkey.Error, err.Error(), logkey.ExitCode, fail.Code(err))
		return out, fmt.Errorf("failover for %s: %w", t.Describe, err)
	}
	out.Action, out.Reason, out.Result = res.Action, res.Reason, &res
	log.Info("done", logkey.Action, res.Action, logkey.Group, res.Group, "target", res.Target, "previous", res.Previous,
		logkey.Started, res.Started, "roles_swapped", res.RolesSwapped)
	for i, step := range res.Plan {
		log.Info("dry run: would do", "n", i+1, logkey.Step, step)
	}
	return out, nil
}
