package imds_test

import (
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/handover/handover/imds"
	"github.com/handover/handover/imds/imdsmock"
)

// The token request refused or unanswered, against our fake and against AWS's metadata mock behind a
// proxy that does to the PUT what the instance's metadata options do to it. Each ends in one
// *imds.TokenError whose line names the option to change, at once or within the token bound, and never in
// a tokenless (IMDSv1) request.

// sdkChain is what the SDK's own error text looks like; the operator's line must not carry it.
const sdkChain = "operation error"

func TestTokenRefusedIsOneLineNamingTheOption(t *testing.T) {
	t.Parallel()
	tests := []struct {
		status int
		option string // the metadata option the line must name
	}{
		{http.StatusForbidden, "HttpEndpoint=enabled"},
		{http.StatusNotFound, "HttpTokens=required"},
		{http.StatusMethodNotAllowed, "HttpTokens=required"},
		{http.StatusBadRequest, "X-aws-ec2-metadata-token-ttl-seconds"},
	}
	for _, tt := range tests {
		t.Run(strconv.Itoa(tt.status), func(t *testing.T) {
			t.Parallel()
			f := &fakeIMDS{docs: baseDocs()}
			f.intercept = func(w http.ResponseWriter, r *http.Request) bool {
				if r.URL.Path == tokenPath {
					http.Error(w, "", tt.status)
					return true
				}
				return false
			}
			c := startFake(t, f, 2*time.Second)
			const bound = 30 * time.Second
			start := time.Now()
			_, err := c.WaitIdentity(t.Context(), bound, nil)
			elapsed := time.Since(start)

			var te *imds.TokenError
			if !errors.As(err, &te) || te.Status != tt.status || te.Unanswered {
				t.Fatalf("WaitIdentity() = %v, want a *TokenError with status %d", err, tt.status)
			}
			msg := te.Error()
			for _, want := range []string{tt.option, "PUT /latest/api/token", strconv.Itoa(tt.status), c.Endpoint()} {
				if !strings.Contains(msg, want) {
					t.Errorf("message %q does not contain %q", msg, want)
				}
			}
			if strings.Contains(msg, sdkChain) || strings.Contains(msg, "\n") {
				t.Errorf("message %q carries the SDK's error chain or more than one line", msg)
			}
			if elapsed > bound/2 { // sanity check: a refusal is an answer, not retried to the bound
				t.Errorf("WaitIdentity() took %s with a %s bound", elapsed, bound)
			}
			if n := f.count(http.MethodPut, tokenPath); n != 1 {
				t.Errorf("token PUT made %d times, want once: a refusal is final", n)
			}
			assertEveryGetHasLiveToken(t, f)
		})
	}
}

func TestTokenUnansweredGivesUpAfterTheTokenBound(t *testing.T) {
	t.Parallel()
	// The hop limit: IMDS receives the PUT, its answer never arrives. GETs would be answered (only the
	// PUT's answer is hop-limited); none may be made without a token.
	release := make(chan struct{})
	f := &fakeIMDS{docs: baseDocs()}
	f.intercept = func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path != tokenPath {
			return false
		}
		select {
		case <-r.Context().Done():
		case <-release:
		}
		return true
	}
	const tokenBound = 1 * time.Second
	c := imds.New(imds.Options{Endpoint: serve(t, f), CallTimeout: 300 * time.Millisecond, TokenBound: tokenBound})
	t.Cleanup(func() { close(release) })

	const bound = 60 * time.Second
	start := time.Now()
	_, err := c.WaitIdentity(t.Context(), bound, nil)
	elapsed := time.Since(start)

	var te *imds.TokenError
	if !errors.As(err, &te) || !te.Unanswered {
		t.Fatalf("WaitIdentity() = %v, want an unanswered *TokenError", err)
	}
	if errors.Is(err, imds.ErrUnreachable) {
		t.Errorf("WaitIdentity() = %v: IMDS was reached, the answer is what is lost", err)
	}
	msg := te.Error()
	for _, want := range []string{"HttpPutResponseHopLimit=2", "PUT /latest/api/token", c.Endpoint()} {
		if !strings.Contains(msg, want) {
			t.Errorf("message %q does not contain %q", msg, want)
		}
	}
	if strings.Contains(msg, sdkChain) {
		t.Errorf("message %q carries the SDK's error chain", msg)
	}
	if te.Waited < tokenBound {
		t.Errorf("gave up after %s of unanswered token requests, before the token bound %s", te.Waited, tokenBound)
	}
	if elapsed > bound/2 { // sanity check: the token bound, not the whole bound
		t.Errorf("WaitIdentity() took %s: the token request must be bounded on its own, not by the %s bound", elapsed, bound)
	}
	if n := f.count(http.MethodPut, tokenPath); n < 2 {
		t.Errorf("token PUT made %d times, want it retried within the token bound", n)
	}
	assertEveryGetHasLiveToken(t, f)
}

func TestTokenUnansweredWithinAShortBoundStillNamesTheHopLimit(t *testing.T) {
	t.Parallel()
	// --imds-timeout shorter than the token bound: the line still says what the symptom was.
	f := &fakeIMDS{docs: baseDocs()}
	release := make(chan struct{})
	f.intercept = func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path != tokenPath {
			return false
		}
		select {
		case <-r.Context().Done():
		case <-release:
		}
		return true
	}
	c := imds.New(imds.Options{Endpoint: serve(t, f), CallTimeout: 200 * time.Millisecond, TokenBound: time.Minute})
	t.Cleanup(func() { close(release) })
	_, err := c.WaitIdentity(t.Context(), time.Second, nil)
	var te *imds.TokenError
	if !errors.As(err, &te) || !te.Unanswered || !strings.Contains(te.Error(), "HttpPutResponseHopLimit") {
		t.Fatalf("WaitIdentity() = %v, want an unanswered *TokenError naming the hop limit", err)
	}
}

func TestWaitIdentitySaysConnectionRefused(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	endpoint := "http://" + ln.Addr().String()
	ln.Close()
	c := imds.New(imds.Options{Endpoint: endpoint, CallTimeout: 200 * time.Millisecond})
	_, err = c.WaitIdentity(t.Context(), 500*time.Millisecond, nil)
	if !errors.Is(err, imds.ErrUnreachable) || !errors.Is(err, imds.ErrConnectionRefused) {
		t.Fatalf("WaitIdentity() = %v, want ErrUnreachable and ErrConnectionRefused", err)
	}
	var te *imds.TokenError
	if errors.As(err, &te) {
		t.Errorf("WaitIdentity() = %v: nothing was sent, so no token request went unanswered", err)
	}
}

// metadataProxy stands between the client and AWS's metadata mock and does to the token request what
// an instance's metadata options do: refuse it with a status, or swallow its answer (the hop limit). It
// records every request it passes on.
type metadataProxy struct {
	upstream *httputil.ReverseProxy
	refuse   int  // answer the token PUT with this status
	swallow  bool // never answer the token PUT

	mu   sync.Mutex
	seen []seenRequest
}

func (p *metadataProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	p.seen = append(p.seen, seenRequest{Method: r.Method, Path: r.URL.Path, Token: r.Header.Get(tokenHeader)})
	p.mu.Unlock()
	if r.URL.Path == tokenPath {
		switch {
		case p.swallow:
			<-r.Context().Done()
			return
		case p.refuse != 0:
			http.Error(w, "", p.refuse)
			return
		}
	}
	p.upstream.ServeHTTP(w, r)
}

func (p *metadataProxy) requests() []seenRequest {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]seenRequest(nil), p.seen...)
}

// startProxy starts the mock with HttpTokens=optional (a tokenless GET is answered: a fallback to IMDSv1
// would succeed) behind p, and returns the proxy's URL and the mock's.
func startProxy(t *testing.T, p *metadataProxy) (proxyURL, mockURL string) {
	t.Helper()
	mockURL = imdsmock.Start(t, imdsmock.Config{InstanceID: "i-0aaaabbbbccccdddd", Region: "eu-central-1", TokensOptional: true})
	u, err := url.Parse(mockURL)
	if err != nil {
		t.Fatal(err)
	}
	// The proxy is the test's stand-in for the instance's own network path, not a forwarding proxy: it adds
	// no X-Forwarded-For (Rewrite sets none), which would make a real IMDS refuse every token request.
	p.upstream = &httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) { r.SetURL(u) }}
	srv := httptest.NewServer(p)
	t.Cleanup(srv.Close)
	return srv.URL, mockURL
}

func TestMockTokenRefusedOrUnansweredNeverFallsBackToV1(t *testing.T) {
	t.Parallel()
	t.Run("control: the mock answers IMDSv1", func(t *testing.T) {
		t.Parallel()
		p := &metadataProxy{}
		proxyURL, _ := startProxy(t, p)
		resp, err := http.Get(proxyURL + "/latest/meta-data/instance-id")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("tokenless GET through the proxy: HTTP %d, want 200 (HttpTokens=optional): without it the cases below prove nothing", resp.StatusCode)
		}
		c := imds.New(imds.Options{Endpoint: proxyURL, CallTimeout: 2 * time.Second})
		if id, err := c.WaitIdentity(t.Context(), 10*time.Second, nil); err != nil || id.InstanceID != "i-0aaaabbbbccccdddd" {
			t.Fatalf("WaitIdentity() through a proxy that passes the PUT = %+v, %v", id, err)
		}
	})
	for _, tt := range []struct {
		name   string
		proxy  *metadataProxy
		option string
	}{
		{"HttpEndpoint disabled (403)", &metadataProxy{refuse: http.StatusForbidden}, "HttpEndpoint=enabled"},
		{"PUT blocked (405)", &metadataProxy{refuse: http.StatusMethodNotAllowed}, "HttpTokens=required"},
		{"hop limit 1 in a container", &metadataProxy{swallow: true}, "HttpPutResponseHopLimit=2"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			proxyURL, _ := startProxy(t, tt.proxy)
			c := imds.New(imds.Options{Endpoint: proxyURL, CallTimeout: 300 * time.Millisecond, TokenBound: time.Second})
			_, err := c.WaitIdentity(t.Context(), time.Minute, nil)
			var te *imds.TokenError
			if !errors.As(err, &te) || !strings.Contains(te.Error(), tt.option) {
				t.Fatalf("WaitIdentity() = %v, want a *TokenError naming %s", err, tt.option)
			}
			for _, r := range tt.proxy.requests() {
				if r.Method != http.MethodPut || r.Path != tokenPath {
					t.Errorf("the proxy passed on %v: only token requests may be made while no token is had (no IMDSv1 fallback)", r)
				}
			}
		})
	}
}
