package sim

import (
	"testing"
	"time"

	handoverimds "github.com/handover/handover/imds"
)

// TestScheduledEventsInMetadata: a scheduled event shows in the instance's metadata at
// events/maintenance/scheduled in the shape IMDS (and amazon-ec2-metadata-mock) uses, only there; canceling
// it keeps it listed, canceled; an unknown code is refused.
func TestScheduledEventsInMetadata(t *testing.T) {
	t.Parallel()
	r := startRegion(t, Options{Speed: 50})
	a := runInstance(t, r, "us-east-1a", nil)
	b := runInstance(t, r, "us-east-1a", nil)
	idle(t, r)
	read := func(id string) []handoverimds.ScheduledEvent {
		t.Helper()
		env, err := r.InstanceEnv(id)
		if err != nil {
			t.Fatal(err)
		}
		c := handoverimds.New(handoverimds.Options{Endpoint: env["AWS_EC2_METADATA_SERVICE_ENDPOINT"], CallTimeout: 2 * time.Second})
		evs, err := c.ScheduledEvents(ctxT(t))
		if err != nil {
			t.Fatal(err)
		}
		return evs
	}
	if evs := read(a); len(evs) != 0 {
		t.Fatalf("events before any was scheduled: %+v", evs)
	}
	at := time.Now().Add(2 * time.Hour).UTC().Truncate(time.Second)
	id, err := r.ScheduleEvent(a, ScheduledEvent{Code: "instance-retirement", NotBefore: at})
	if err != nil {
		t.Fatal(err)
	}
	evs := read(a)
	if len(evs) != 1 || evs[0].EventID != id || evs[0].Code != "instance-retirement" || !evs[0].NotBefore.Equal(at) || !evs[0].Pending() {
		t.Fatalf("events of %s: %+v, want the retirement at %s", a, evs, at)
	}
	if evs := read(b); len(evs) != 0 {
		t.Errorf("events of %s, which has none: %+v", b, evs)
	}
	if _, err := r.ScheduleEvent(a, ScheduledEvent{EventID: id, Code: "instance-retirement", NotBefore: at, State: "canceled"}); err != nil {
		t.Fatal(err)
	}
	if evs := read(a); len(evs) != 1 || evs[0].Pending() {
		t.Errorf("after canceling: %+v, want the event listed, not pending", evs)
	}
	if _, err := r.ScheduleEvent(a, ScheduledEvent{Code: "instance-explode", NotBefore: at}); err == nil {
		t.Error("an unknown event code was accepted")
	}
}
