package agent

import (
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
)

// TestUpRidesOutSlowTagsInMetadata: instance metadata that answers the identity but fails the first tag
// reads with 503 (IMDS still starting, or a machine too busy to answer in time) is read again; up goes on
// instead of failing at the first unanswered tag. (Before, one failed tag read ended up with exit 1, and
// in a mass recovery 119 of 500 replacements abandoned their launch so.)
func TestUpRidesOutSlowTagsInMetadata(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	w := newTestRegion(t)
	w.unmountOnCleanup()
	w.allocateAddress(testGroup)
	id := w.runInstance("us-east-1a", groupTags, true)
	real, err := url.Parse(w.agentEnv(id, nil)("AWS_EC2_METADATA_SERVICE_ENDPOINT"))
	if err != nil {
		t.Fatal(err)
	}
	// Rewrite, not NewSingleHostReverseProxy: no X-Forwarded-For, which IMDS (and the simulator's) refuses.
	proxy := &httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) { r.SetURL(real); r.Out.Host = real.Host }}
	var refused atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/latest/meta-data/tags/instance") && refused.Load() < 6 {
			refused.Add(1)
			http.Error(rw, "Service Unavailable", http.StatusServiceUnavailable)
			return
		}
		proxy.ServeHTTP(rw, r)
	}))
	t.Cleanup(srv.Close)
	res := w.runAgent(w.ctx(), id, map[string]string{"AWS_EC2_METADATA_SERVICE_ENDPOINT": srv.URL}, w.upArgs(id)...)
	mustSucceed(t, res)
	if n := refused.Load(); n < 6 {
		t.Fatalf("only %d tag reads refused: the test did not exercise the retry", n)
	}
}
