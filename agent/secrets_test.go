package agent

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/handover/handover/internal/fail"
)

// Canary values: secrets handover holds or could see. None may ever appear in what it prints.
const (
	canarySecretKey    = "CANARYsecretKEY0123456789abcdefghijklmnop"
	canarySessionToken = "CANARYsessionTOKEN0123456789"
	canaryIMDSToken    = "CANARYimdsTOKEN"
	canaryUserData     = "CANARYuserDATA password=hunter2"
)

// canaryIMDS stands in front of an instance's IMDS in the simulator and hands out canary tokens
// (CANARYimdsTOKEN-1, -2, ...) in place of the simulator's, translating them back on the way in; it
// serves canary user data at /latest/user-data. It counts the requests that carried a canary token.
type canaryIMDS struct {
	upstream *url.URL
	mu       sync.Mutex
	tokens   map[string]string // canary -> the simulator's token
	used     int
}

func (c *canaryIMDS) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/latest/api/token" {
		req, _ := http.NewRequestWithContext(r.Context(), http.MethodPut, c.upstream.String()+r.URL.Path, nil)
		req.Header.Set("X-aws-ec2-metadata-token-ttl-seconds", r.Header.Get("X-aws-ec2-metadata-token-ttl-seconds"))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		real, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			http.Error(w, string(real), resp.StatusCode)
			return
		}
		c.mu.Lock()
		canary := fmt.Sprintf("%s-%d", canaryIMDSToken, len(c.tokens)+1)
		c.tokens[canary] = string(real)
		c.mu.Unlock()
		w.Header().Set("X-aws-ec2-metadata-token-ttl-seconds", resp.Header.Get("X-aws-ec2-metadata-token-ttl-seconds"))
		_, _ = w.Write([]byte(canary))
		return
	}
	c.mu.Lock()
	real, ok := c.tokens[r.Header.Get("X-aws-ec2-metadata-token")]
	if ok {
		c.used++
	}
	c.mu.Unlock()
	if !ok {
		http.Error(w, "Unauthorized", http.StatusUnauthorized)
		return
	}
	if r.URL.Path == "/latest/user-data" {
		_, _ = w.Write([]byte(canaryUserData))
		return
	}
	req, _ := http.NewRequestWithContext(r.Context(), r.Method, c.upstream.String()+r.URL.Path, nil)
	req.Header.Set("X-aws-ec2-metadata-token", real)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	w.WriteHeader(resp.StatusCode)
	_, _ = io.Copy(w, resp.Body)
}

// TestSecretsNeverInLogsOrSummaries: with canary credentials in the environment (secret key, session
// token), canary IMDSv2 tokens and canary user data, every command at --log-level debug, in both log
// formats, succeeding and failing, prints none of them on stdout or stderr.
func TestSecretsNeverInLogsOrSummaries(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	for _, format := range []string{"text", "json"} {
		t.Run(format, func(t *testing.T) {
			t.Parallel()
			w := newTestRegion(t)
			w.unmountOnCleanup()
			w.allocateAddress(testGroup)
			id := w.runInstance("us-east-1a", groupTags, true)
			other := w.runInstance("us-east-1b", groupTags, true)

			proxyFor := func(instance string) string {
				env, err := w.sim.InstanceEnv(instance)
				if err != nil {
					t.Fatal(err)
				}
				u, err := url.Parse(env["AWS_EC2_METADATA_SERVICE_ENDPOINT"])
				if err != nil {
					t.Fatal(err)
				}
				p := &canaryIMDS{upstream: u, tokens: map[string]string{}}
				srv := httptest.NewServer(p)
				t.Cleanup(srv.Close)
				t.Cleanup(func() {
					p.mu.Lock()
					defer p.mu.Unlock()
					if p.used == 0 {
						t.Errorf("no request to %s's IMDS carried a canary token: the test proves nothing", instance)
					}
				})
				return srv.URL
			}
			secrets := func(instance string) map[string]string {
				return map[string]string{
					"AWS_SECRET_ACCESS_KEY":             canarySecretKey,
					"AWS_SESSION_TOKEN":                 canarySessionToken,
					"AWS_EC2_METADATA_SERVICE_ENDPOINT": proxyFor(instance),
					"HANDOVER_LOG_LEVEL":                "debug",
					"HANDOVER_LOG_FORMAT":               format,
				}
			}
			envID, envOther := secrets(id), secrets(other)
			spec := "data:/dev/sdf:" + w.mountPoint(id)
			runs := []struct {
				who  string
				env  map[string]string
				args []string
				code int
			}{
				{id, envID, w.upArgs(id), fail.CodeOK},
				{id, envID, []string{"status"}, fail.CodeOK},
				{id, envID, []string{"status", "--json"}, fail.CodeOK},
				{id, envID, []string{"snapshot", "--volume", spec}, fail.CodeOK},
				{other, envOther, w.upArgs(other, "--release-timeout", "1s"), fail.CodeFenced},
				{id, envID, []string{"down", "--volume", spec}, fail.CodeOK},
				{id, envID, []string{"up", "--size", "nine"}, fail.CodeUsage},
			}
			for _, r := range runs {
				res := w.runAgent(w.ctx(), r.who, r.env, r.args...)
				if res.code != r.code {
					t.Errorf("%v exited %d, want %d\nstderr:\n%s", r.args, res.code, r.code, res.stderr)
				}
				assertNoCanary(t, strings.Join(r.args, " "), res)
			}
			// watch, for a few polls.
			ctx, cancel := context.WithTimeout(w.ctx(), 2*time.Second)
			defer cancel()
			res := w.runAgent(ctx, id, envID, "watch", "--volume", spec, "--poll-interval", "100ms", "--state-file", w.dir+"/watch.json")
			if res.code != fail.CodeOK {
				t.Errorf("watch exited %d\nstderr:\n%s", res.code, res.stderr)
			}
			if !strings.Contains(res.stderr, "watching instance metadata") {
				t.Errorf("watch did not get to watching:\n%s", res.stderr)
			}
			assertNoCanary(t, "watch", res)
		})
	}
}

func assertNoCanary(t *testing.T, what string, res agentResult) {
	t.Helper()
	for _, canary := range []string{canarySecretKey, canarySessionToken, canaryIMDSToken, canaryUserData, "hunter2"} {
		for stream, out := range map[string]string{"stdout": res.stdout, "stderr": res.stderr} {
			if strings.Contains(out, canary) {
				t.Errorf("%s printed the secret %q on %s:\n%s", what, canary, stream, out)
			}
		}
	}
}
