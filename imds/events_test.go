package imds_test

import (
	"testing"
	"time"

	"github.com/handover/handover/imds"
	"github.com/handover/handover/imds/imdsmock"
)

// TestMockScheduledEvents reads events/maintenance/scheduled from AWS's metadata mock, configured with an
// active instance-retirement (testdata/scheduled-events-mock.json): the mock's JSON shape and time layout
// are what ScheduledEvents parses.
func TestMockScheduledEvents(t *testing.T) {
	t.Parallel()
	c := imds.New(imds.Options{Endpoint: imdsmock.StartFile(t, "testdata/scheduled-events-mock.json"), CallTimeout: 2 * time.Second})
	evs, err := c.ScheduledEvents(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	want := time.Date(2030, 1, 7, 1, 3, 47, 0, time.UTC)
	if len(evs) != 1 || evs[0].Code != imds.EventInstanceRetirement || !evs[0].NotBefore.Equal(want) || !evs[0].Pending() || evs[0].EventID == "" {
		t.Fatalf("ScheduledEvents() = %+v, want one pending instance-retirement at %s", evs, want)
	}
	if !evs[0].NotAfter.Equal(want.Add(7 * 24 * time.Hour)) {
		t.Errorf("NotAfter = %s", evs[0].NotAfter)
	}
}

func TestParseScheduledEvents(t *testing.T) {
	t.Parallel()
	// The example of https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/monitoring-instances-status-check_sched.html.
	doc := `[{"NotBefore" : "21 Jan 2019 09:00:43 GMT", "Code" : "system-reboot", "Description" : "scheduled reboot",
		"EventId" : "instance-event-0d59937288b749b32", "NotAfter" : "21 Jan 2019 09:17:23 GMT", "State" : "active"},
		{"NotBefore" : "22 Jan 2019 09:00:43 GMT", "Code" : "instance-stop", "Description" : "[Canceled] stop",
		"EventId" : "instance-event-1", "State" : "canceled"}]`
	evs, err := imds.ParseScheduledEvents([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 2 || evs[0].Code != imds.EventSystemReboot || !evs[0].NotBefore.Equal(time.Date(2019, 1, 21, 9, 0, 43, 0, time.UTC)) ||
		!evs[0].Pending() || evs[1].Pending() {
		t.Fatalf("parsed %+v", evs)
	}
	for _, bad := range []string{`{}`, `[{"Code":"instance-stop"}]`, `[{"Code":"instance-stop","NotBefore":"tomorrow"}]`, `[{"NotBefore":"21 Jan 2019 09:00:43 GMT"}]`} {
		if _, err := imds.ParseScheduledEvents([]byte(bad)); err == nil {
			t.Errorf("%s: parsed, want an error", bad)
		}
	}
	if evs, err := imds.ParseScheduledEvents([]byte("[]")); err != nil || len(evs) != 0 {
		t.Errorf("[]: %v %v", evs, err)
	}
}
