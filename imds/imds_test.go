package imds_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/handover/handover/imds"
)

const (
	tokenPath    = "/latest/api/token"
	tokenHeader  = "X-aws-ec2-metadata-token"
	ttlHeader    = "X-aws-ec2-metadata-token-ttl-seconds"
	docPath      = "/latest/dynamic/instance-identity/document"
	metadataRoot = "/latest/meta-data/"
)

// identityDoc is an instance identity document as IMDS serves it (trimmed to what handover reads).
const identityDoc = `{
  "accountId": "111122223333",
  "architecture": "x86_64",
  "availabilityZone": "eu-west-1b",
  "imageId": "ami-0123456789abcdef0",
  "instanceId": "i-0123456789abcdef0",
  "instanceType": "t3.micro",
  "privateIp": "10.1.2.3",
  "region": "eu-west-1",
  "version": "2017-09-30"
}`

var wantIdentity = imds.Identity{
	InstanceID:         "i-0123456789abcdef0",
	AvailabilityZone:   "eu-west-1b",
	AvailabilityZoneID: "euw1-az2",
	Region:             "eu-west-1",
	AccountID:          "111122223333",
	InstanceType:       "t3.micro",
	ImageID:            "ami-0123456789abcdef0",
	PrivateIP:          "10.1.2.3",
}

// seenRequest is one request as the fake IMDS received it.
type seenRequest struct {
	Method, Path, Token, TTL string
}

func (r seenRequest) String() string {
	return fmt.Sprintf("%s %s token=%q ttl=%q", r.Method, r.Path, r.Token, r.TTL)
}

// fakeIMDS is IMDSv2 as the SDK's shared_test.go models it: PUT /latest/api/token with a TTL header issues
// a token, every GET must carry a live token (401 otherwise), documents come from a map (404 otherwise).
// It records every request it sees. intercept, when set, sees each request after it is recorded and
// answers it itself by returning true.
type fakeIMDS struct {
	mu        sync.Mutex
	docs      map[string]string // full path -> body
	issued    []string          // tokens handed out, in order
	revoked   map[string]bool   // tokens answered with 401 from now on
	seen      []seenRequest
	intercept func(w http.ResponseWriter, r *http.Request) bool
}

func (f *fakeIMDS) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.seen = append(f.seen, seenRequest{Method: r.Method, Path: r.URL.Path, Token: r.Header.Get(tokenHeader), TTL: r.Header.Get(ttlHeader)})
	intercept := f.intercept
	f.mu.Unlock()
	if intercept != nil && intercept(w, r) {
		return
	}

	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case r.URL.Path == tokenPath:
		if r.Method != http.MethodPut {
			http.Error(w, "token needs PUT", http.StatusMethodNotAllowed)
			return
		}
		ttl, err := strconv.Atoi(r.Header.Get(ttlHeader))
		if err != nil || ttl < 1 || ttl > 21600 {
			http.Error(w, "bad or missing TTL", http.StatusBadRequest)
			return
		}
		tok := fmt.Sprintf("token-%d", len(f.issued)+1)
		f.issued = append(f.issued, tok)
		w.Header().Set(ttlHeader, strconv.Itoa(ttl))
		fmt.Fprint(w, tok)
	case r.Method == http.MethodGet:
		tok := r.Header.Get(tokenHeader)
		if !f.live(tok) {
			http.Error(w, "", http.StatusUnauthorized)
			return
		}
		body, ok := f.docs[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		fmt.Fprint(w, body)
	default:
		http.Error(w, "", http.StatusMethodNotAllowed)
	}
}

// live reports whether tok was issued and not revoked. Callers hold f.mu.
func (f *fakeIMDS) live(tok string) bool {
	if tok == "" || f.revoked[tok] {
		return false
	}
	for _, t := range f.issued {
		if t == tok {
			return true
		}
	}
	return false
}

func (f *fakeIMDS) requests() []seenRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]seenRequest(nil), f.seen...)
}

func (f *fakeIMDS) tokens() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.issued...)
}

func (f *fakeIMDS) revoke(tok string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.revoked == nil {
		f.revoked = map[string]bool{}
	}
	f.revoked[tok] = true
}

// count is how many requests matched method and path.
func (f *fakeIMDS) count(method, path string) int {
	n := 0
	for _, r := range f.requests() {
		if r.Method == method && r.Path == path {
			n++
		}
	}
	return n
}

// baseDocs is an instance in eu-west-1b with two tags, not in an Auto Scaling group, with no notices.
func baseDocs() map[string]string {
	return map[string]string{
		docPath: identityDoc,
		metadataRoot + "placement/availability-zone-id": "euw1-az2",
		metadataRoot + "instance-id":                    "i-0123456789abcdef0",
		metadataRoot + "tags/instance":                  "Name\nhandover-group\n",
		metadataRoot + "tags/instance/Name":             "db-1",
		metadataRoot + "tags/instance/handover-group":   "pg-main",
	}
}

// startFake serves f on 127.0.0.1 for the test and returns a client for it.
func startFake(t *testing.T, f *fakeIMDS, callTimeout time.Duration) *imds.Client {
	t.Helper()
	return imds.New(imds.Options{Endpoint: serve(t, f), CallTimeout: callTimeout})
}

// serve serves f on 127.0.0.1 until the test ends and returns its URL.
func serve(t *testing.T, f *fakeIMDS) string {
	t.Helper()
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	if !strings.HasPrefix(srv.URL, "http://127.0.0.1:") {
		t.Fatalf("test server listens on %s, want 127.0.0.1", srv.URL)
	}
	return srv.URL
}

// assertEveryGetHasLiveToken fails the test if the server saw a GET without a token or with a token it
// never issued: the client must never fall back to IMDSv1.
func assertEveryGetHasLiveToken(t *testing.T, f *fakeIMDS) {
	t.Helper()
	issued := map[string]bool{}
	for _, tok := range f.tokens() {
		issued[tok] = true
	}
	for _, r := range f.requests() {
		if r.Method == http.MethodGet && !issued[r.Token] {
			t.Errorf("server saw %v: a GET without an issued token (IMDSv1 fallback)", r)
		}
	}
}

func TestIdentityFetchesTokenFirstAndSendsItOnEveryGet(t *testing.T) {
	t.Parallel()
	f := &fakeIMDS{docs: baseDocs()}
	c := startFake(t, f, 2*time.Second)

	id, err := c.Identity(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if id != wantIdentity {
		t.Errorf("Identity() = %+v, want %+v", id, wantIdentity)
	}
	// A second call reuses the cached token.
	if _, err := c.Get(t.Context(), "instance-id"); err != nil {
		t.Fatal(err)
	}

	reqs := f.requests()
	if len(reqs) == 0 || reqs[0].Method != http.MethodPut || reqs[0].Path != tokenPath {
		t.Fatalf("first request = %v, want PUT %s; all: %v", reqs[0], tokenPath, reqs)
	}
	if ttl, err := strconv.Atoi(reqs[0].TTL); err != nil || ttl <= 0 {
		t.Errorf("token PUT carries TTL header %q, want a positive number of seconds", reqs[0].TTL)
	}
	if toks := f.tokens(); len(toks) != 1 {
		t.Errorf("server issued %d tokens (%v), want 1 reused by every call", len(toks), toks)
	}
	gets := 0
	for _, r := range reqs[1:] {
		if r.Method != http.MethodGet {
			t.Errorf("unexpected %v after the token PUT", r)
			continue
		}
		gets++
		if r.Token != "token-1" {
			t.Errorf("%v: want token-1", r)
		}
	}
	if gets != 3 { // identity document, AZ ID, instance-id
		t.Errorf("server saw %d GETs, want 3: %v", gets, reqs)
	}
}

func TestIdentityWithoutAZIDLeavesItEmpty(t *testing.T) {
	t.Parallel()
	docs := baseDocs()
	delete(docs, metadataRoot+"placement/availability-zone-id")
	c := startFake(t, &fakeIMDS{docs: docs}, 2*time.Second)

	id, err := c.Identity(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	want := wantIdentity
	want.AvailabilityZoneID = ""
	if id != want {
		t.Errorf("Identity() = %+v, want %+v", id, want)
	}
}

func TestIdentityRejectsDocumentWithoutRegion(t *testing.T) {
	t.Parallel()
	docs := baseDocs()
	docs[docPath] = `{"instanceId": "i-0123456789abcdef0", "availabilityZone": "eu-west-1b"}`
	c := startFake(t, &fakeIMDS{docs: docs}, 2*time.Second)

	_, err := c.Identity(t.Context())
	if err == nil {
		t.Fatal("Identity() accepted a document without a region")
	}
	if imds.Unreachable(err) {
		t.Errorf("Unreachable(%v) = true, want false: IMDS answered", err)
	}
}

func TestUnauthorizedGetFetchesNewTokenAndRetries(t *testing.T) {
	t.Parallel()
	f := &fakeIMDS{docs: baseDocs()}
	c := startFake(t, f, 2*time.Second)
	if _, err := c.Get(t.Context(), "instance-id"); err != nil {
		t.Fatal(err)
	}
	// IMDS forgets the token (it expired early, or IMDS restarted): the next GET gets 401.
	f.revoke("token-1")

	got, err := c.Get(t.Context(), "instance-id")
	if err != nil {
		t.Fatalf("Get after 401: %v; server saw %v", err, f.requests())
	}
	if got != "i-0123456789abcdef0" {
		t.Errorf("Get() = %q", got)
	}
	if toks := f.tokens(); len(toks) != 2 {
		t.Fatalf("server issued tokens %v, want a second one after the 401", toks)
	}
	reqs := f.requests()
	want := []seenRequest{
		{http.MethodPut, tokenPath, "", reqs[0].TTL},
		{http.MethodGet, metadataRoot + "instance-id", "token-1", ""},
		{http.MethodGet, metadataRoot + "instance-id", "token-1", ""}, // answered 401
		{http.MethodPut, tokenPath, "", reqs[0].TTL},
		{http.MethodGet, metadataRoot + "instance-id", "token-2", ""},
	}
	if fmt.Sprint(reqs) != fmt.Sprint(want) {
		t.Errorf("server saw\n%v\nwant\n%v", reqs, want)
	}
}

func TestTagsDisabledIsErrTagsDisabled(t *testing.T) {
	t.Parallel()
	docs := baseDocs()
	for p := range docs {
		if strings.HasPrefix(p, metadataRoot+"tags/") {
			delete(docs, p)
		}
	}
	f := &fakeIMDS{docs: docs}
	c := startFake(t, f, 2*time.Second)

	tags, err := c.Tags(t.Context())
	if !errors.Is(err, imds.ErrTagsDisabled) {
		t.Fatalf("Tags() = %v, %v; want ErrTagsDisabled", tags, err)
	}
	if n := f.count(http.MethodGet, metadataRoot+"tags/instance"); n != 1 {
		t.Errorf("tags/instance was read %d times, want 1 (a 404 is an answer, not retried)", n)
	}
}

func TestTagsListsKeysAndReadsEachValue(t *testing.T) {
	t.Parallel()
	f := &fakeIMDS{docs: baseDocs()}
	c := startFake(t, f, 2*time.Second)

	tags, err := c.Tags(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"Name": "db-1", "handover-group": "pg-main"}
	if !maps.Equal(tags, want) {
		t.Errorf("Tags() = %v, want %v", tags, want)
	}
	assertEveryGetHasLiveToken(t, f)
}

func TestTagValueVanishingIsAnError(t *testing.T) {
	t.Parallel()
	// The tag was removed between the listing and the read: the listing is stale, so say so rather than
	// return a partial map.
	docs := baseDocs()
	delete(docs, metadataRoot+"tags/instance/handover-group")
	c := startFake(t, &fakeIMDS{docs: docs}, 2*time.Second)

	tags, err := c.Tags(t.Context())
	if err == nil || errors.Is(err, imds.ErrTagsDisabled) {
		t.Fatalf("Tags() = %v, %v; want an error other than ErrTagsDisabled", tags, err)
	}
	if !errors.Is(err, imds.ErrNotFound) {
		t.Errorf("Tags() error %v does not wrap ErrNotFound", err)
	}
}

func TestServerErrorThenSuccess(t *testing.T) {
	t.Parallel()
	f := &fakeIMDS{docs: baseDocs()}
	var mu sync.Mutex
	failures := 1
	f.intercept = func(w http.ResponseWriter, r *http.Request) bool {
		mu.Lock()
		defer mu.Unlock()
		if r.Method == http.MethodGet && failures > 0 {
			failures--
			http.Error(w, "", http.StatusServiceUnavailable)
			return true
		}
		return false
	}
	c := startFake(t, f, 2*time.Second)

	got, err := c.Get(t.Context(), "instance-id")
	if err != nil {
		t.Fatalf("Get() after one 503: %v; server saw %v", err, f.requests())
	}
	if got != "i-0123456789abcdef0" {
		t.Errorf("Get() = %q", got)
	}
	if n := f.count(http.MethodGet, metadataRoot+"instance-id"); n != 2 {
		t.Errorf("instance-id was read %d times, want 2 (503, then 200)", n)
	}
}

func TestPersistentServerErrorIsUnreachable(t *testing.T) {
	t.Parallel()
	f := &fakeIMDS{docs: baseDocs()}
	f.intercept = func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method == http.MethodGet {
			http.Error(w, "", http.StatusInternalServerError)
			return true
		}
		return false
	}
	c := startFake(t, f, 2*time.Second)

	_, err := c.Get(t.Context(), "instance-id")
	if err == nil {
		t.Fatal("Get() succeeded against a server that only answers 500")
	}
	if !imds.Unreachable(err) {
		t.Errorf("Unreachable(%v) = false, want true for a 5xx", err)
	}
	if errors.Is(err, imds.ErrNotFound) {
		t.Errorf("a 500 became ErrNotFound: %v", err)
	}
}

func TestCallTimeoutBoundsAHangingServer(t *testing.T) {
	t.Parallel()
	for _, hangOn := range []string{http.MethodPut, http.MethodGet} {
		t.Run("hang on "+hangOn, func(t *testing.T) {
			const callTimeout = 300 * time.Millisecond
			release := make(chan struct{})
			reached := make(chan struct{}, 16)
			f := &fakeIMDS{docs: baseDocs()}
			f.intercept = func(w http.ResponseWriter, r *http.Request) bool {
				if r.Method != hangOn {
					return false
				}
				reached <- struct{}{}
				select {
				case <-r.Context().Done(): // the client gave up and closed the connection
				case <-release:
				}
				return true
			}
			// A plain http.Client has none of the SDK's transport timeouts (500 ms for response headers),
			// so only CallTimeout can end the call: without it the SDK's 5 s operation default would.
			c := imds.New(imds.Options{Endpoint: serve(t, f), CallTimeout: callTimeout, HTTPClient: &http.Client{}})
			t.Cleanup(func() { close(release) }) // runs before the server's Close

			start := time.Now()
			_, err := c.Get(t.Context(), "instance-id")
			elapsed := time.Since(start)

			if err == nil {
				t.Fatal("Get() succeeded against a server that never answers")
			}
			select {
			case <-reached:
			default:
				t.Fatalf("the hanging handler never saw the %s; server saw %v", hangOn, f.requests())
			}
			if !imds.Unreachable(err) {
				t.Errorf("Unreachable(%v) = false, want true for a timeout", err)
			}
			// Sanity check with ten times the slack, not a timing test: bounded by CallTimeout.
			if limit := callTimeout + 3*time.Second; elapsed > limit {
				t.Errorf("Get() took %s against a hanging server, want well under %s", elapsed, limit)
			}
		})
	}
}

func TestTokenRefusedNeverFallsBackToV1(t *testing.T) {
	t.Parallel()
	// A host that only speaks IMDSv1 (or has IMDS turned off) refuses the token PUT. The SDK's default
	// would fall back to tokenless GETs; ours must not, and must not read the refusal as "not found".
	for _, status := range []int{http.StatusForbidden, http.StatusNotFound, http.StatusMethodNotAllowed} {
		t.Run(strconv.Itoa(status), func(t *testing.T) {
			f := &fakeIMDS{docs: baseDocs()}
			f.intercept = func(w http.ResponseWriter, r *http.Request) bool {
				if r.URL.Path == tokenPath {
					http.Error(w, "", status)
					return true
				}
				// An IMDSv1 host would answer a tokenless GET; the test fails below if one arrives.
				return false
			}
			c := startFake(t, f, 2*time.Second)
			ctx := t.Context()

			calls := map[string]func() error{
				"Identity": func() error { _, err := c.Identity(ctx); return err },
				"Get":      func() error { _, err := c.Get(ctx, "instance-id"); return err },
				"Tags":     func() error { _, err := c.Tags(ctx); return err },
				"TargetLifecycleState": func() error {
					s, ok, err := c.TargetLifecycleState(ctx)
					if err == nil {
						return fmt.Errorf("returned %q, %v and no error", s, ok)
					}
					return err
				},
				"SpotInstanceAction": func() error {
					a, err := c.SpotInstanceAction(ctx)
					if err == nil {
						return fmt.Errorf("returned %v and no error", a)
					}
					return err
				},
				"RebalanceRecommendation": func() error {
					r, err := c.RebalanceRecommendation(ctx)
					if err == nil {
						return fmt.Errorf("returned %v and no error", r)
					}
					return err
				},
			}
			for name, call := range calls {
				err := call()
				switch {
				case err == nil:
					t.Errorf("%s succeeded without a token", name)
				case strings.Contains(err.Error(), "and no error"):
					t.Errorf("%s %v: a refused token must be an error, not an absent notice", name, err)
				case errors.Is(err, imds.ErrNotFound) || errors.Is(err, imds.ErrTagsDisabled):
					t.Errorf("%s: refused token read as absent: %v", name, err)
				case imds.Unreachable(err):
					t.Errorf("%s: Unreachable(%v) = true, want false: IMDS answered", name, err)
				}
			}

			for _, r := range f.requests() {
				if r.Method != http.MethodPut || r.Path != tokenPath {
					t.Errorf("server saw %v; want only token PUTs", r)
				}
			}
			assertEveryGetHasLiveToken(t, f)
		})
	}
}

func TestSpotInstanceAction(t *testing.T) {
	t.Parallel()
	const path = metadataRoot + "spot/instance-action"
	tests := []struct {
		name    string
		doc     *string
		want    *imds.SpotAction
		wantErr bool
	}{
		{name: "absent", doc: nil, want: nil},
		{name: "terminate", doc: ptr(`{"action": "terminate", "time": "2030-01-02T03:04:05Z"}`),
			want: &imds.SpotAction{Action: "terminate", Time: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)}},
		{name: "stop", doc: ptr(`{"action": "stop", "time": "2030-01-02T03:06:05Z"}`),
			want: &imds.SpotAction{Action: "stop", Time: time.Date(2030, 1, 2, 3, 6, 5, 0, time.UTC)}},
		{name: "no action", doc: ptr(`{"time": "2030-01-02T03:04:05Z"}`), wantErr: true},
		{name: "not JSON", doc: ptr(`terminate`), wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			docs := baseDocs()
			if tt.doc != nil {
				docs[path] = *tt.doc
			}
			c := startFake(t, &fakeIMDS{docs: docs}, 2*time.Second)

			got, err := c.SpotInstanceAction(t.Context())
			if tt.wantErr {
				if err == nil {
					t.Fatalf("SpotInstanceAction() = %+v, want an error", got)
				}
				if imds.Unreachable(err) {
					t.Errorf("Unreachable(%v) = true for a malformed answer", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if (got == nil) != (tt.want == nil) || (got != nil && (got.Action != tt.want.Action || !got.Time.Equal(tt.want.Time))) {
				t.Errorf("SpotInstanceAction() = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestRebalanceRecommendation(t *testing.T) {
	t.Parallel()
	const path = metadataRoot + "events/recommendations/rebalance"
	t.Run("absent", func(t *testing.T) {
		c := startFake(t, &fakeIMDS{docs: baseDocs()}, 2*time.Second)
		got, err := c.RebalanceRecommendation(t.Context())
		if err != nil || got != nil {
			t.Errorf("RebalanceRecommendation() = %+v, %v; want nil, nil", got, err)
		}
	})
	t.Run("present", func(t *testing.T) {
		docs := baseDocs()
		docs[path] = `{"noticeTime": "2030-01-02T03:00:00Z"}`
		c := startFake(t, &fakeIMDS{docs: docs}, 2*time.Second)
		got, err := c.RebalanceRecommendation(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if want := time.Date(2030, 1, 2, 3, 0, 0, 0, time.UTC); got == nil || !got.NoticeTime.Equal(want) {
			t.Errorf("RebalanceRecommendation() = %+v, want notice at %s", got, want)
		}
	})
}

func TestTargetLifecycleState(t *testing.T) {
	t.Parallel()
	const path = metadataRoot + "autoscaling/target-lifecycle-state"
	t.Run("not in a group", func(t *testing.T) {
		c := startFake(t, &fakeIMDS{docs: baseDocs()}, 2*time.Second)
		s, ok, err := c.TargetLifecycleState(t.Context())
		if err != nil || ok || s != "" {
			t.Errorf("TargetLifecycleState() = %q, %v, %v; want \"\", false, nil", s, ok, err)
		}
	})
	t.Run("terminating", func(t *testing.T) {
		docs := baseDocs()
		docs[path] = "Terminated\n"
		c := startFake(t, &fakeIMDS{docs: docs}, 2*time.Second)
		s, ok, err := c.TargetLifecycleState(t.Context())
		if err != nil || !ok || s != "Terminated" {
			t.Errorf("TargetLifecycleState() = %q, %v, %v; want \"Terminated\", true, nil", s, ok, err)
		}
	})
}

func TestWaitIdentityGivesUpAtTheBoundWhenNothingListens(t *testing.T) {
	t.Parallel()
	// A port on 127.0.0.1 that was just closed: every connection is refused, as on a host with no IMDS.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	endpoint := "http://" + ln.Addr().String()
	ln.Close()
	c := imds.New(imds.Options{Endpoint: endpoint, CallTimeout: 200 * time.Millisecond})

	const bound = 1 * time.Second
	start := time.Now()
	_, err = c.WaitIdentity(t.Context(), bound, slog.New(slog.DiscardHandler))
	elapsed := time.Since(start)

	if !errors.Is(err, imds.ErrUnreachable) {
		t.Fatalf("WaitIdentity() = %v, want ErrUnreachable", err)
	}
	if !strings.Contains(err.Error(), endpoint) {
		t.Errorf("error %q does not name the endpoint %s", err, endpoint)
	}
	if elapsed < bound {
		t.Errorf("gave up after %s, before the bound %s", elapsed, bound)
	}
	if limit := bound + 5*time.Second; elapsed > limit { // sanity check, not a timing test
		t.Errorf("gave up after %s, want soon after the bound %s", elapsed, bound)
	}
}

func TestWaitIdentityRetriesWhileIMDSIsStarting(t *testing.T) {
	t.Parallel()
	f := &fakeIMDS{docs: baseDocs()}
	var mu sync.Mutex
	failures := 3
	f.intercept = func(w http.ResponseWriter, r *http.Request) bool {
		mu.Lock()
		defer mu.Unlock()
		if failures > 0 {
			failures--
			http.Error(w, "", http.StatusServiceUnavailable)
			return true
		}
		return false
	}
	c := startFake(t, f, 2*time.Second)

	id, err := c.WaitIdentity(t.Context(), 20*time.Second, nil)
	if err != nil {
		t.Fatalf("WaitIdentity() = %v; server saw %v", err, f.requests())
	}
	if id != wantIdentity {
		t.Errorf("WaitIdentity() = %+v, want %+v", id, wantIdentity)
	}
	if n := len(f.requests()); n < 4 {
		t.Errorf("server saw %d requests, want the 3 failures and then the answers", n)
	}
	assertEveryGetHasLiveToken(t, f)
}

func TestWaitIdentityReturnsAnAnswerAtOnce(t *testing.T) {
	t.Parallel()
	// Retrying will not heal these: WaitIdentity must return them without waiting for its bound.
	tests := []struct {
		name      string
		intercept func(w http.ResponseWriter, r *http.Request) bool
		docs      func(map[string]string)
		once      seenRequest // the request that must have been made exactly once
	}{
		{
			name: "403 on the identity document",
			intercept: func(w http.ResponseWriter, r *http.Request) bool {
				if r.URL.Path == docPath {
					http.Error(w, "", http.StatusForbidden)
					return true
				}
				return false
			},
			once: seenRequest{Method: http.MethodGet, Path: docPath},
		},
		{
			name: "token refused (IMDSv1 only)",
			intercept: func(w http.ResponseWriter, r *http.Request) bool {
				if r.URL.Path == tokenPath {
					http.Error(w, "", http.StatusForbidden)
					return true
				}
				return false
			},
			once: seenRequest{Method: http.MethodPut, Path: tokenPath},
		},
		{
			name: "document without region",
			docs: func(d map[string]string) {
				d[docPath] = `{"instanceId": "i-0123456789abcdef0", "availabilityZone": "eu-west-1b"}`
			},
			once: seenRequest{Method: http.MethodGet, Path: docPath},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			docs := baseDocs()
			if tt.docs != nil {
				tt.docs(docs)
			}
			f := &fakeIMDS{docs: docs, intercept: tt.intercept}
			c := startFake(t, f, 2*time.Second)

			const bound = 30 * time.Second
			start := time.Now()
			_, err := c.WaitIdentity(t.Context(), bound, nil)
			elapsed := time.Since(start)

			if err == nil {
				t.Fatal("WaitIdentity() succeeded")
			}
			if errors.Is(err, imds.ErrUnreachable) {
				t.Errorf("WaitIdentity() = %v; an answer is not ErrUnreachable", err)
			}
			if n := f.count(tt.once.Method, tt.once.Path); n != 1 {
				t.Errorf("%s %s was made %d times, want once (not retried); server saw %v", tt.once.Method, tt.once.Path, n, f.requests())
			}
			if elapsed > bound/2 { // sanity check: it did not wait for the bound
				t.Errorf("WaitIdentity() took %s with a %s bound", elapsed, bound)
			}
		})
	}
}

func TestWaitIdentityStopsWhenTheCallerCancels(t *testing.T) {
	t.Parallel()
	f := &fakeIMDS{docs: baseDocs()}
	f.intercept = func(w http.ResponseWriter, r *http.Request) bool {
		http.Error(w, "", http.StatusServiceUnavailable)
		return true
	}
	c := startFake(t, f, 2*time.Second)

	ctx, cancel := context.WithCancelCause(t.Context())
	stopping := errors.New("agent stopping")
	time.AfterFunc(300*time.Millisecond, func() { cancel(stopping) })
	_, err := c.WaitIdentity(ctx, 30*time.Second, nil)

	if !errors.Is(err, stopping) {
		t.Errorf("WaitIdentity() = %v, want the caller's cause", err)
	}
	if errors.Is(err, imds.ErrUnreachable) {
		t.Errorf("WaitIdentity() = %v: the caller stopped it, IMDS was not given its bound", err)
	}
}

func TestUnreachable(t *testing.T) {
	t.Parallel()
	if imds.Unreachable(nil) {
		t.Error("Unreachable(nil) = true")
	}
	if imds.Unreachable(fmt.Errorf("x: %w", imds.ErrNotFound)) {
		t.Error("Unreachable(ErrNotFound) = true")
	}
	if !imds.Unreachable(context.DeadlineExceeded) {
		t.Error("Unreachable(DeadlineExceeded) = false")
	}
}

func ptr[T any](v T) *T { return &v }
