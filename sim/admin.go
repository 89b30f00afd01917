package sim

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// serveAdmin drives what the AWS API cannot: Spot notices, rebalance
// recommendations, abrupt instance death, failing status checks, failed
// snapshots, and reading the
// call log or an instance's environment. handover-sim's subcommands and
// shell scripts use it.
//
//	POST /sim/spot?instance=i-..&action=terminate[&in=2m]   ("" action clears)
//	POST /sim/rebalance?instance=i-..[&clear=true]
//	POST /sim/scheduled-event?instance=i-..&code=instance-retirement&in=2h[&event=instance-event-..&state=canceled]
//	     (JSON {"event": id}; see ScheduleEvent)
//	POST /sim/kill?instance=i-..
//	POST /sim/status-checks?instance=i-..&system=impaired&instance-status=ok ("" = automatic)
//	POST /sim/hang-shutdown?instance=i-..[&hang=false]   (shutting-down/stopping hangs; hang=false lets it go)
//	POST /sim/fail-snapshot?snapshot=snap-..
//	POST /sim/kms-key-state?key=KEY&state=Disabled   (encrypted volumes created with KEY end in error)
//	GET  /sim/calls            (JSON list of Call)
//	POST /sim/calls/reset
//	GET  /sim/transitions      (JSON list of TransitionRecord: what ran, with the delays drawn)
//	POST /sim/transitions/reset
//	GET  /sim/env?instance=i-.. (JSON object)
//	GET  /sim/idle             (returns once no transition is scheduled)
//	POST /sim/hold?transition=volume-create[&id=vol-..]   (JSON {"hold": "h-N"}; see Hold)
//	POST /sim/release?hold=h-N
//	GET  /sim/held?transition=volume-create[&id=vol-..]   (returns {"id": ...} once one is held; see WaitHeld)
func (r *Region) serveAdmin(w http.ResponseWriter, req *http.Request) {
	q := req.URL.Query()
	id := q.Get("instance")
	var err error
	var out any = map[string]string{"status": "ok"}
	switch req.URL.Path {
	case "/sim/spot":
		at := time.Now().Add(2 * time.Minute)
		if d, perr := time.ParseDuration(q.Get("in")); perr == nil {
			at = time.Now().Add(d)
		}
		err = r.SetSpotAction(id, q.Get("action"), at)
	case "/sim/rebalance":
		at := time.Now()
		if q.Get("clear") == "true" {
			at = time.Time{}
		}
		err = r.SetRebalance(id, at)
	case "/sim/scheduled-event":
		e := ScheduledEvent{Code: q.Get("code"), State: q.Get("state"), EventID: q.Get("event"), NotBefore: time.Now()}
		if d, perr := time.ParseDuration(q.Get("in")); perr == nil {
			e.NotBefore = time.Now().Add(d)
		}
		var id string
		if id, err = r.ScheduleEvent(q.Get("instance"), e); err == nil {
			out = map[string]string{"event": id}
		}
	case "/sim/kill":
		err = r.KillInstance(id)
	case "/sim/status-checks":
		err = r.SetInstanceStatus(id, q.Get("system"), q.Get("instance-status"))
	case "/sim/hang-shutdown":
		err = r.HangShutdown(id, q.Get("hang") != "false")
	case "/sim/fail-snapshot":
		err = r.FailSnapshot(q.Get("snapshot"))
	case "/sim/kms-key-state":
		err = r.SetKMSKeyState(q.Get("key"), q.Get("state"))
	case "/sim/calls":
		out = r.Calls()
	case "/sim/calls/reset":
		r.ResetCalls()
	case "/sim/transitions":
		out = r.Transitions()
	case "/sim/transitions/reset":
		r.ResetTransitions()
	case "/sim/env":
		out, err = r.InstanceEnv(id)
	case "/sim/idle":
		err = r.WaitIdle(req.Context())
	case "/sim/hold":
		var kind Transition
		if kind, err = ParseTransition(q.Get("transition")); err == nil {
			out = map[string]string{"hold": r.adminHold(kind, q.Get("id"))}
		}
	case "/sim/release":
		err = r.adminRelease(q.Get("hold"))
	case "/sim/held":
		var kind Transition
		if kind, err = ParseTransition(q.Get("transition")); err == nil {
			var held string
			if held, err = r.WaitHeld(req.Context(), kind, q.Get("id")); err == nil {
				out = map[string]string{"id": held}
			}
		}
	default:
		http.NotFound(w, req)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	if err != nil {
		w.WriteHeader(http.StatusBadRequest)
		out = map[string]string{"error": err.Error()}
	}
	_ = json.NewEncoder(w).Encode(out)
}

// adminHold is Hold for the admin path: the release is kept under a name
// the caller passes to /sim/release.
func (r *Region) adminHold(kind Transition, id string) string {
	release := r.Hold(kind, id)
	r.cfgMu.Lock()
	defer r.cfgMu.Unlock()
	r.adminHolds++
	name := "h-" + strconv.Itoa(r.adminHolds)
	if r.releases == nil {
		r.releases = map[string]func(){}
	}
	r.releases[name] = release
	return name
}

func (r *Region) adminRelease(name string) error {
	r.cfgMu.Lock()
	release := r.releases[name]
	delete(r.releases, name)
	r.cfgMu.Unlock()
	if release == nil {
		return fmt.Errorf("sim: no hold %q", name)
	}
	release()
	return nil
}
