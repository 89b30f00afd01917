package imdsmock

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestMockConfigRefusesWhatTheMockCannotServe(t *testing.T) {
	for name, cfg := range map[string]Config{
		"three tags":       {Tags: map[string]string{"a": "1", "b": "2", "c": "3"}},
		"tag key with '/'": {Tags: map[string]string{"team/name": "x"}},
		"unknown action":   {Spot: &SpotInterruption{Action: "reboot"}},
	} {
		if _, err := cfg.mockConfig(); err == nil {
			t.Errorf("%s: mockConfig() accepted it", name)
		}
	}
}

func TestMockConfigPutsRegionInTheIdentityDocument(t *testing.T) {
	raw, err := Config{Region: "sa-east-1", Spot: &SpotInterruption{Time: time.Date(2030, 1, 2, 3, 4, 5, 0, time.FixedZone("x", 3600))}}.mockConfig()
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		IMDSv2 bool  `json:"imdsv2"`
		Delay  int64 `json:"mock-delay-sec"`
		Spot   struct {
			Action, Time string
		} `json:"spot"`
		Dynamic struct {
			Values struct {
				Doc map[string]string `json:"instance-identity-document"`
			} `json:"values"`
		} `json:"dynamic"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	if !doc.IMDSv2 {
		t.Error("imdsv2 is not true")
	}
	if d := doc.Dynamic.Values.Doc; d["region"] != "sa-east-1" || !strings.HasPrefix(d["availabilityZone"], "sa-east-1") {
		t.Errorf("identity document = %v, want region sa-east-1 and an AZ in it", d)
	}
	if doc.Delay != 0 || doc.Spot.Action != "terminate" || doc.Spot.Time != "2030-01-02T02:04:05Z" {
		t.Errorf("spot = %+v after %d s, want terminate at 2030-01-02T02:04:05Z at once", doc.Spot, doc.Delay)
	}
}
