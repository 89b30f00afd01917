package imds_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/handover/handover/imds"
)

// Fuzz targets of what handover reads from instance metadata: the identity document, the tags, and the
// three notices (Auto Scaling target lifecycle state, Spot interruption, rebalance recommendation). IMDS
// answers with a fuzzed body and status through an in-memory transport (no socket). The properties that
// matter to the agent:
//   - an answer (any 4xx, or a 200 with a document handover cannot use) is never "unreachable": the boot
//     commands retry unreachable metadata for a minute and then say "not on EC2", which would send the
//     operator the wrong way;
//   - a 404 means what the API says for that path (no tags in metadata, no notice, not in a group);
//   - what a call returns is what the document says, read independently with encoding/json.
// Run one with `go test -run '^$' -fuzz '^FuzzIdentityDocument$' -fuzztime 60s ./imds/`.

// memIMDS answers IMDSv2 from a map of path -> (status, body), in memory.
type memIMDS map[string]memAnswer

type memAnswer struct {
	status int
	body   []byte
}

func (m memIMDS) RoundTrip(r *http.Request) (*http.Response, error) {
	w := httptest.NewRecorder()
	switch a, ok := m[r.URL.Path]; {
	case r.Method == http.MethodPut && r.URL.Path == tokenPath:
		w.Header().Set(ttlHeader, "21600")
		_, _ = w.WriteString("AQAEAFUZZTOKEN==")
	case r.Header.Get(tokenHeader) == "":
		w.WriteHeader(http.StatusUnauthorized)
	case !ok:
		w.WriteHeader(http.StatusNotFound)
	default:
		w.WriteHeader(a.status)
		_, _ = w.Write(a.body)
	}
	resp := w.Result()
	resp.Request = r
	return resp, nil
}

// memServer is a memIMDS whose documents each fuzz input replaces; one client (and its token) serves a
// target's inputs, which a fuzz worker runs one at a time.
type memServer struct{ docs memIMDS }

func (s *memServer) RoundTrip(r *http.Request) (*http.Response, error) { return s.docs.RoundTrip(r) }

// memClient returns a client of IMDS answering from the documents set by the returned function.
func memClient() (*imds.Client, func(memIMDS)) {
	s := &memServer{}
	c := imds.New(imds.Options{Endpoint: "http://169.254.169.254", HTTPClient: &http.Client{Transport: s}, CallTimeout: 5 * time.Second})
	return c, func(m memIMDS) { s.docs = m }
}

// fuzzStatus maps a fuzzed number onto the statuses IMDS answers with. A 5xx and a 401 are left out: the
// SDK retries those after a second (a 401 with a fresh token), which would make the fuzzer crawl, and
// imds_test.go covers both (their body plays no part).
func fuzzStatus(n uint8) int {
	statuses := []int{http.StatusOK, http.StatusOK, http.StatusOK, http.StatusNotFound, http.StatusForbidden,
		http.StatusBadRequest, http.StatusMethodNotAllowed}
	return statuses[int(n)%len(statuses)]
}

// checkClassified fails unless err's classification matches the status IMDS answered with.
func checkClassified(t *testing.T, what string, status int, err error) {
	t.Helper()
	if err != nil && imds.Unreachable(err) {
		t.Fatalf("%s: IMDS answered %d, yet the error reads as unreachable: %v", what, status, err)
	}
}

// FuzzIdentityDocument: Identity reads the document's fields exactly, refuses one that lacks the instance,
// zone or region, and classifies every failure by whether IMDS answered.
func FuzzIdentityDocument(f *testing.F) {
	f.Add([]byte(identityDoc), uint8(0), "euw1-az2", uint8(0))
	f.Add([]byte(`{"instanceId":"i-1","availabilityZone":"a","region":"r"}`), uint8(0), "", uint8(3))
	f.Add([]byte(`{"instanceId":"","availabilityZone":"a","region":"r"}`), uint8(0), "x", uint8(0))
	f.Add([]byte(`not json`), uint8(0), "x", uint8(0))
	f.Add([]byte(identityDoc), uint8(4), "x", uint8(0))
	f.Add([]byte(identityDoc), uint8(0), "x", uint8(6))
	c, serve := memClient()
	f.Fuzz(func(t *testing.T, doc []byte, docStatus uint8, azID string, azStatus uint8) {
		ds, as := fuzzStatus(docStatus), fuzzStatus(azStatus)
		serve(memIMDS{
			docPath: {ds, doc}, metadataRoot + "placement/availability-zone-id": {as, []byte(azID)},
		})
		id, err := c.Identity(context.Background())
		var want struct {
			InstanceID       string `json:"instanceId"`
			AvailabilityZone string `json:"availabilityZone"`
			Region           string `json:"region"`
			AccountID        string `json:"accountId"`
			InstanceType     string `json:"instanceType"`
			ImageID          string `json:"imageId"`
			PrivateIP        string `json:"privateIp"`
		}
		decodes := json.Unmarshal(doc, &want) == nil
		usable := decodes && want.InstanceID != "" && want.AvailabilityZone != "" && want.Region != ""
		switch {
		case ds != http.StatusOK:
			checkClassified(t, "identity document", ds, err)
			if err == nil {
				t.Fatalf("identity document answered %d, yet Identity returned %+v", ds, id)
			}
			return
		case !usable:
			if err == nil {
				t.Fatalf("document %q is not usable, yet Identity returned %+v", doc, id)
			}
			checkClassified(t, "identity document", ds, err)
			return
		case as != http.StatusOK && as != http.StatusNotFound:
			if err == nil {
				t.Fatalf("placement/availability-zone-id answered %d, yet Identity returned %+v", as, id)
			}
			checkClassified(t, "availability-zone-id", as, err)
			return
		}
		if err != nil {
			t.Fatalf("document %q and AZ ID %q (%d): %v", doc, azID, as, err)
		}
		wantID := imds.Identity{InstanceID: want.InstanceID, AvailabilityZone: want.AvailabilityZone, Region: want.Region,
			AccountID: want.AccountID, InstanceType: want.InstanceType, ImageID: want.ImageID, PrivateIP: want.PrivateIP}
		if as == http.StatusOK {
			wantID.AvailabilityZoneID = strings.TrimSpace(azID)
		}
		if id != wantID {
			t.Fatalf("document %q: Identity = %+v, want %+v", doc, id, wantID)
		}
	})
}

// imdsTagKey reports whether k is a tag key instance metadata can carry: letters, digits and + - = . , _ : @,
// not "." or "..", not "_index".
// https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/work-with-tags-in-IMDS.html
func imdsTagKey(k string) bool {
	if k == "" || k == "." || k == ".." || k == "_index" || len(k) > 128 {
		return false
	}
	for _, r := range k {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("+-=.,_:@", r)) {
			return false
		}
	}
	return true
}

// FuzzInstanceTags: Tags reads the listing (one key a line) and each key's value, and returns exactly those
// tags; a listing that is not there (404) is "tags not in metadata", never an empty set of tags.
func FuzzInstanceTags(f *testing.F) {
	f.Add("handover:group\nName\n", "orders", uint8(0), uint8(0))
	f.Add("handover:group\r\n\n  Name  \n", " orders\n", uint8(0), uint8(0))
	f.Add("", "", uint8(3), uint8(0))
	f.Add("a\nb", "v", uint8(0), uint8(3))
	f.Add("a", "v", uint8(5), uint8(0))
	f.Add("a=b,c:d@e+f", "$(touch /tmp/pwned)", uint8(0), uint8(0))
	c, serve := memClient()
	f.Fuzz(func(t *testing.T, listing, value string, listStatus, valueStatus uint8) {
		ls, vs := fuzzStatus(listStatus), fuzzStatus(valueStatus)
		var keys []string
		for _, line := range strings.Split(listing, "\n") {
			if k := strings.TrimSpace(line); k != "" {
				if !imdsTagKey(k) {
					return // a key metadata cannot hold: IMDS never lists one
				}
				keys = append(keys, k)
			}
		}
		m := memIMDS{metadataRoot + "tags/instance": {ls, []byte(listing)}}
		for i, k := range keys {
			m[metadataRoot+"tags/instance/"+k] = memAnswer{vs, []byte(value + strings.Repeat("x", i%2))}
		}
		serve(m)
		tags, err := c.Tags(context.Background())
		switch {
		case ls == http.StatusNotFound:
			if !errors.Is(err, imds.ErrTagsDisabled) {
				t.Fatalf("tags/instance answered 404: got %v, %v; want ErrTagsDisabled", tags, err)
			}
			return
		case ls != http.StatusOK:
			if err == nil || errors.Is(err, imds.ErrTagsDisabled) {
				t.Fatalf("tags/instance answered %d: got %v, %v", ls, tags, err)
			}
			checkClassified(t, "tags/instance", ls, err)
			return
		case len(keys) > 0 && vs != http.StatusOK:
			if err == nil || errors.Is(err, imds.ErrTagsDisabled) {
				t.Fatalf("a tag's value answered %d: got %v, %v", vs, tags, err)
			}
			checkClassified(t, "tags/instance/KEY", vs, err)
			return
		}
		if err != nil {
			t.Fatalf("listing %q: %v", listing, err)
		}
		want := map[string]string{}
		for i, k := range keys {
			want[k] = strings.TrimSpace(value + strings.Repeat("x", i%2))
		}
		if !reflect.DeepEqual(tags, want) {
			t.Fatalf("listing %q, value %q: Tags = %q, want %q", listing, value, tags, want)
		}
	})
}

// trimmed is a document as Get returns it: without surrounding white space, which JSON's own white space
// (space, tab, CR, LF) does not all cover.
func trimmed(b []byte) []byte { return []byte(strings.TrimSpace(string(b))) }

// FuzzNotices: the target lifecycle state, a Spot interruption and a rebalance recommendation are read as
// their documents say; a 404 is "none" (not in a group, no notice); a document handover cannot read is an
// error that is an answer, not an outage; a Spot notice always names its action.
func FuzzNotices(f *testing.F) {
	f.Add(uint8(0), []byte("InService"), uint8(0))
	f.Add(uint8(0), []byte("Terminated\n"), uint8(3))
	f.Add(uint8(1), []byte(`{"action": "terminate", "time": "2017-09-18T08:22:00Z"}`), uint8(0))
	f.Add(uint8(1), []byte(`{"action": "", "time": "2017-09-18T08:22:00Z"}`), uint8(0))
	f.Add(uint8(1), []byte(`{"action": "stop", "time": "soon"}`), uint8(0))
	f.Add(uint8(2), []byte(`{"noticeTime": "2020-10-27T08:22:00Z"}`), uint8(0))
	f.Add(uint8(2), []byte(`[]`), uint8(0))
	f.Add(uint8(2), []byte(`{}`), uint8(7))
	f.Add(uint8(0), []byte(`x`), uint8(4))
	c, serve := memClient()
	f.Fuzz(func(t *testing.T, kind uint8, body []byte, status uint8) {
		st := fuzzStatus(status)
		ctx := context.Background()
		switch kind % 3 {
		case 0:
			serve(memIMDS{metadataRoot + "autoscaling/target-lifecycle-state": {st, body}})
			state, ok, err := c.TargetLifecycleState(ctx)
			switch {
			case st == http.StatusNotFound:
				if err != nil || ok || state != "" {
					t.Fatalf("404: got %q, %v, %v; want not in a group", state, ok, err)
				}
			case st != http.StatusOK:
				if err == nil {
					t.Fatalf("%d: got %q, %v and no error", st, state, ok)
				}
				checkClassified(t, "target-lifecycle-state", st, err)
			case err != nil || !ok || state != strings.TrimSpace(string(body)):
				t.Fatalf("body %q: got %q, %v, %v", body, state, ok, err)
			}
		case 1:
			serve(memIMDS{metadataRoot + "spot/instance-action": {st, body}})
			a, err := c.SpotInstanceAction(ctx)
			var want imds.SpotAction
			readable := json.Unmarshal(trimmed(body), &want) == nil && want.Action != ""
			switch {
			case st == http.StatusNotFound:
				if err != nil || a != nil {
					t.Fatalf("404: got %+v, %v; want no notice", a, err)
				}
			case st != http.StatusOK || !readable:
				if err == nil {
					t.Fatalf("%d %q: got %+v and no error", st, body, a)
				}
				checkClassified(t, "spot/instance-action", st, err)
			case err != nil || a == nil || *a != want:
				t.Fatalf("body %q: got %+v, %v; want %+v", body, a, err, want)
			}
		case 2:
			serve(memIMDS{metadataRoot + "events/recommendations/rebalance": {st, body}})
			r, err := c.RebalanceRecommendation(ctx)
			var want imds.Rebalance
			readable := json.Unmarshal(trimmed(body), &want) == nil
			switch {
			case st == http.StatusNotFound:
				if err != nil || r != nil {
					t.Fatalf("404: got %+v, %v; want no recommendation", r, err)
				}
			case st != http.StatusOK || !readable:
				if err == nil {
					t.Fatalf("%d %q: got %+v and no error", st, body, r)
				}
				checkClassified(t, "rebalance", st, err)
			case err != nil || r == nil || *r != want:
				t.Fatalf("body %q: got %+v, %v; want %+v", body, r, err, want)
			}
		}
	})
}
