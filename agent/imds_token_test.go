package agent

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/handover/handover/internal/fail"
)

// TestIMDSRefusingTheTokenIsOneLineExit3: metadata that refuses the IMDSv2 token request, or never answers
// it, ends every command with exit 3 and one line naming the metadata option to change; before, a refusal
// was exit 1 with the SDK's four-level error chain, and an unanswered PUT waited all of --imds-timeout (5
// minutes for watch). No command reads metadata without a token.
func TestIMDSRefusingTheTokenIsOneLineExit3(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		answer func(w http.ResponseWriter, r *http.Request) // the token PUT's fate
		option string
	}{
		{"metadata endpoint disabled (403)", func(w http.ResponseWriter, r *http.Request) { http.Error(w, "Forbidden", http.StatusForbidden) }, "HttpEndpoint=enabled"},
		{"IMDSv1 only: PUT not allowed (405)", func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "Method Not Allowed", http.StatusMethodNotAllowed)
		}, "HttpTokens=required"},
		{"hop limit 1 in a container: the answer never arrives", func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }, "HttpPutResponseHopLimit=2"},
	}
	for _, tt := range tests {
		for _, cmd := range []string{"up", "watch", "status"} {
			t.Run(tt.name+"/"+cmd, func(t *testing.T) {
				t.Parallel()
				var mu sync.Mutex
				var tokenless []string
				srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					if r.URL.Path == "/latest/api/token" {
						tt.answer(w, r)
						return
					}
					if r.Header.Get("X-aws-ec2-metadata-token") == "" {
						mu.Lock()
						tokenless = append(tokenless, r.Method+" "+r.URL.Path)
						mu.Unlock()
					}
					http.Error(w, "Unauthorized", http.StatusUnauthorized)
				}))
				t.Cleanup(srv.Close)
				t.Cleanup(srv.CloseClientConnections) // the hanging handlers end first
				env := map[string]string{"AWS_EC2_METADATA_SERVICE_ENDPOINT": srv.URL, "HANDOVER_GROUP": "orders"}
				var stdout, stderr bytes.Buffer
				start := time.Now()
				code := Main(t.Context(), []string{cmd}, Env{Getenv: mapEnv(env), Stdout: &stdout, Stderr: &stderr})
				elapsed := time.Since(start)

				if code != fail.CodePrecondition {
					t.Fatalf("%s exited %d, want 3\nstderr:\n%s", cmd, code, stderr.String())
				}
				lines := strings.Split(strings.TrimRight(stderr.String(), "\n"), "\n")
				last := lines[len(lines)-1]
				for _, want := range []string{tt.option, srv.URL} {
					if !strings.Contains(last, want) {
						t.Errorf("error line lacks %q:\n%s", want, last)
					}
				}
				if strings.Contains(last, "operation error") || strings.Contains(last, "failed to get API token") {
					t.Errorf("error line carries the SDK's error chain:\n%s", last)
				}
				// Not a timing test: the bound is the token bound (10 s), not --imds-timeout (1 or 5 minutes).
				if elapsed > 45*time.Second {
					t.Errorf("%s took %s to give up on the token request", cmd, elapsed)
				}
				mu.Lock()
				defer mu.Unlock()
				if len(tokenless) > 0 {
					t.Errorf("%s read metadata without a token (IMDSv1 fallback): %v", cmd, tokenless)
				}
			})
		}
	}
}
