package imds_test

// The behaviours of imds_test.go, as far as AWS's metadata mock (amazon-ec2-metadata-mock) models them.
// The mock cannot model: an instance outside an Auto Scaling group (it always serves
// target-lifecycle-state), a 401 for a token it issued (its tokens live as long as their TTL), 5xx
// answers, or a hanging server. Those stay with imds_test.go. A host that refuses the token request, or
// whose answer to it never arrives, is the mock behind a proxy that does that to the PUT (token_test.go).

import (
	"encoding/json"
	"errors"
	"maps"
	"net/http"
	"os"
	"path"
	"testing"
	"time"

	"github.com/handover/handover/imds"
	"github.com/handover/handover/imds/imdsmock"
)

func mockClient(t *testing.T, cfg imdsmock.Config) *imds.Client {
	t.Helper()
	return imds.New(imds.Options{Endpoint: imdsmock.Start(t, cfg), CallTimeout: 2 * time.Second})
}

func TestMockIdentity(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		cfg  imdsmock.Config
		want imds.Identity
	}{
		{
			name: "with AZ ID",
			cfg: imdsmock.Config{InstanceID: "i-0aaaabbbbccccdddd", Region: "ap-southeast-2", AvailabilityZone: "ap-southeast-2c",
				AvailabilityZoneID: "apse2-az3", AccountID: "444455556666", InstanceType: "m7g.large", PrivateIP: "10.9.8.7", ImageID: "ami-0fedcba9876543210"},
			want: imds.Identity{InstanceID: "i-0aaaabbbbccccdddd", Region: "ap-southeast-2", AvailabilityZone: "ap-southeast-2c",
				AvailabilityZoneID: "apse2-az3", AccountID: "444455556666", InstanceType: "m7g.large", PrivateIP: "10.9.8.7", ImageID: "ami-0fedcba9876543210"},
		},
		{
			name: "host without AZ ID",
			cfg:  imdsmock.Config{InstanceID: "i-0aaaabbbbccccdddd", Region: "us-east-2"},
			want: imds.Identity{InstanceID: "i-0aaaabbbbccccdddd", Region: "us-east-2", AvailabilityZone: "us-east-2a",
				AccountID: "111122223333", InstanceType: "t3.micro", PrivateIP: "10.0.0.10", ImageID: "ami-0123456789abcdef0"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := mockClient(t, tt.cfg)
			id, err := c.Identity(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			if id != tt.want {
				t.Errorf("Identity() = %+v, want %+v", id, tt.want)
			}
			// The region is the identity document's: the mock's own default region is us-east-1.
			if got, err := c.Get(t.Context(), "placement/region"); err != nil || got != tt.want.Region {
				t.Errorf("placement/region = %q, %v; want %q", got, err, tt.want.Region)
			}
		})
	}
}

func TestMockTags(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		tags map[string]string
	}{
		{"two", map[string]string{"Name": "db-1", "handover-group": "pg-main"}},
		{"one", map[string]string{"handover-group": "pg-main"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := mockClient(t, imdsmock.Config{Tags: tt.tags})
			got, err := c.Tags(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			if !maps.Equal(got, tt.tags) {
				t.Errorf("Tags() = %v, want %v", got, tt.tags)
			}
		})
	}
	t.Run("disabled", func(t *testing.T) {
		t.Parallel()
		c := mockClient(t, imdsmock.Config{})
		if got, err := c.Tags(t.Context()); !errors.Is(err, imds.ErrTagsDisabled) {
			t.Errorf("Tags() = %v, %v; want ErrTagsDisabled", got, err)
		}
	})
}

func TestMockTargetLifecycleState(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		terminated bool
		want       string
	}{{false, "InService"}, {true, "Terminated"}} {
		t.Run(tt.want, func(t *testing.T) {
			t.Parallel()
			c := mockClient(t, imdsmock.Config{ASGTerminated: tt.terminated})
			s, ok, err := c.TargetLifecycleState(t.Context())
			if err != nil || !ok || s != tt.want {
				t.Errorf("TargetLifecycleState() = %q, %v, %v; want %q, true, nil", s, ok, err, tt.want)
			}
		})
	}
}

func TestMockSpotAndRebalance(t *testing.T) {
	t.Parallel()
	t.Run("none scheduled", func(t *testing.T) {
		t.Parallel()
		c := mockClient(t, imdsmock.Config{})
		if a, err := c.SpotInstanceAction(t.Context()); err != nil || a != nil {
			t.Errorf("SpotInstanceAction() = %+v, %v; want nil, nil", a, err)
		}
		if r, err := c.RebalanceRecommendation(t.Context()); err != nil || r != nil {
			t.Errorf("RebalanceRecommendation() = %+v, %v; want nil, nil", r, err)
		}
	})
	t.Run("scheduled", func(t *testing.T) {
		t.Parallel()
		stopAt := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
		noticeAt := time.Date(2030, 1, 2, 3, 0, 0, 0, time.UTC)
		c := mockClient(t, imdsmock.Config{
			Spot:            &imdsmock.SpotInterruption{Action: "stop", Time: stopAt},
			RebalanceNotice: noticeAt,
		})
		a, err := c.SpotInstanceAction(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if a == nil || a.Action != "stop" || !a.Time.Equal(stopAt) {
			t.Errorf("SpotInstanceAction() = %+v, want stop at %s", a, stopAt)
		}
		r, err := c.RebalanceRecommendation(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if r == nil || !r.NoticeTime.Equal(noticeAt) {
			t.Errorf("RebalanceRecommendation() = %+v, want notice at %s", r, noticeAt)
		}
	})
}

func TestMockRequiresToken(t *testing.T) {
	t.Parallel()
	endpoint := imdsmock.Start(t, imdsmock.Config{})

	// An IMDSv1 request is refused: so every answer the client gets below was had with a token. (The mock
	// does not guard its directory listings, such as tags/instance, so ask for documents.)
	for _, p := range []string{"/latest/meta-data/instance-id", docPath} {
		resp, err := http.Get(endpoint + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("GET %s without a token: HTTP %d, want 401", p, resp.StatusCode)
		}
	}

	c := imds.New(imds.Options{Endpoint: endpoint, CallTimeout: 2 * time.Second})
	if got, err := c.Get(t.Context(), "instance-id"); err != nil || got != "i-0123456789abcdef0" {
		t.Errorf("Get(instance-id) = %q, %v; want the configured instance", got, err)
	}
}

func TestMockWaitIdentity(t *testing.T) {
	t.Parallel()
	c := mockClient(t, imdsmock.Config{InstanceID: "i-0aaaabbbbccccdddd", Region: "eu-central-1"})
	id, err := c.WaitIdentity(t.Context(), 10*time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	if id.InstanceID != "i-0aaaabbbbccccdddd" || id.Region != "eu-central-1" || id.AvailabilityZone != "eu-central-1a" {
		t.Errorf("WaitIdentity() = %+v", id)
	}
}

// TestMockCommittedConfig keeps testdata/metadata-mock.json, the example config for running the mock by
// hand, working and consistent: what the client reads must be what the file says.
func TestMockCommittedConfig(t *testing.T) {
	t.Parallel()
	const file = "testdata/metadata-mock.json"
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		IMDSv2   bool `json:"imdsv2"`
		Metadata struct {
			Paths  map[string]string `json:"paths"`
			Values map[string]string `json:"values"`
		} `json:"metadata"`
		Dynamic struct {
			Values struct {
				Doc struct {
					InstanceID       string `json:"instanceId"`
					AvailabilityZone string `json:"availabilityZone"`
					Region           string `json:"region"`
					AccountID        string `json:"accountId"`
					InstanceType     string `json:"instanceType"`
					PrivateIP        string `json:"privateIp"`
					ImageID          string `json:"imageId"`
				} `json:"instance-identity-document"`
			} `json:"values"`
		} `json:"dynamic"`
	}
	if err := json.Unmarshal(raw, &cfg); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	if !cfg.IMDSv2 {
		t.Errorf("%s: imdsv2 is not true", file)
	}
	doc := cfg.Dynamic.Values.Doc
	want := imds.Identity{InstanceID: doc.InstanceID, AvailabilityZone: doc.AvailabilityZone, Region: doc.Region,
		AccountID: doc.AccountID, InstanceType: doc.InstanceType, PrivateIP: doc.PrivateIP, ImageID: doc.ImageID,
		AvailabilityZoneID: cfg.Metadata.Values["placement-availability-zone-id"]}
	wantTags := map[string]string{}
	for _, slot := range []string{"tags-instance-name", "tags-instance-test"} {
		if p := cfg.Metadata.Paths[slot]; p != "" {
			wantTags[path.Base(p)] = cfg.Metadata.Values[slot]
		}
	}

	c := imds.New(imds.Options{Endpoint: imdsmock.StartFile(t, file), CallTimeout: 2 * time.Second})
	id, err := c.Identity(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if id != want {
		t.Errorf("Identity() = %+v, want %+v (from %s)", id, want, file)
	}
	for key, docValue := range map[string]string{"instance-id": doc.InstanceID, "placement/availability-zone": doc.AvailabilityZone, "placement/region": doc.Region} {
		if got, err := c.Get(t.Context(), key); err != nil || got != docValue {
			t.Errorf("%s: meta-data %s = %q, %v; the identity document says %q", file, key, got, err, docValue)
		}
	}
	tags, err := c.Tags(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(wantTags) == 0 || !maps.Equal(tags, wantTags) {
		t.Errorf("Tags() = %v, want %v (from %s)", tags, wantTags, file)
	}
}
