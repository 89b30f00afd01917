package cloud

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/ec2"
)

// TestNewClientsReadsRoleCredentialsWithIMDSv2Only: without credentials in the environment the instance
// role's come from IMDS, at the endpoint the environment names, and with a token only: when IMDS refuses
// the token request, no tokenless (IMDSv1) request is made, though this IMDS would answer one. (The SDK's
// default client falls back to IMDSv1, and reads the endpoint from the process environment.)
func TestNewClientsReadsRoleCredentialsWithIMDSv2Only(t *testing.T) {
	t.Parallel()
	for _, refuseToken := range []bool{false, true} {
		name := "token issued"
		if refuseToken {
			name = "token refused"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			var mu sync.Mutex
			var tokenless []string
			md := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/latest/api/token" {
					if refuseToken {
						http.Error(w, "", http.StatusForbidden)
						return
					}
					w.Header().Set("X-aws-ec2-metadata-token-ttl-seconds", "21600")
					_, _ = w.Write([]byte("a-token"))
					return
				}
				if r.Header.Get("X-aws-ec2-metadata-token") == "" {
					mu.Lock()
					tokenless = append(tokenless, r.URL.Path)
					mu.Unlock()
				}
				switch r.URL.Path {
				case "/latest/meta-data/iam/security-credentials/":
					_, _ = w.Write([]byte("handover-role"))
				case "/latest/meta-data/iam/security-credentials/handover-role":
					_, _ = w.Write([]byte(`{"Code":"Success","Type":"AWS-HMAC","AccessKeyId":"ASIAROLEFROMIMDS","SecretAccessKey":"s","Token":"t","Expiration":"` +
						time.Now().Add(time.Hour).UTC().Format(time.RFC3339) + `"}`))
				default:
					http.NotFound(w, r)
				}
			}))
			t.Cleanup(md.Close)
			var sawKey string
			api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				sawKey = r.Header.Get("Authorization")
				mu.Unlock()
				w.Header().Set("Content-Type", "text/xml")
				_, _ = w.Write([]byte(`<DescribeVolumesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"><requestId>r</requestId><volumeSet/></DescribeVolumesResponse>`))
			}))
			t.Cleanup(api.Close)
			env := map[string]string{"AWS_EC2_METADATA_SERVICE_ENDPOINT": md.URL, "AWS_ENDPOINT_URL_EC2": api.URL}
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			c, err := NewClients(ctx, func(k string) string { return env[k] }, "eu-west-1")
			if err != nil {
				t.Fatal(err)
			}
			_, err = c.EC2.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{}, func(o *ec2.Options) { o.RetryMaxAttempts = 1 })
			mu.Lock()
			defer mu.Unlock()
			if refuseToken {
				if err == nil {
					t.Errorf("DescribeVolumes signed with credentials IMDS gave without a token (%s)", sawKey)
				}
				if len(tokenless) > 0 {
					t.Errorf("role credentials read with IMDSv1 (no token): %v", tokenless)
				}
				return
			}
			if err != nil || !strings.Contains(sawKey, "ASIAROLEFROMIMDS") {
				t.Errorf("DescribeVolumes = %v, signed %q; want the role's credentials from the IMDS the environment names", err, sawKey)
			}
		})
	}
}

// TestThrottleToCaller: with throttleToCaller a wait's check gets RequestLimitExceeded back at once (its
// Poll spaces the calls out), while a 500 is still retried inside the SDK; without it the SDK retries
// the throttled call too.
func TestThrottleToCaller(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		code      int
		errCode   string
		opt       bool
		wantCalls int
		wantErr   bool
	}{
		{"throttled, handed back", 503, "RequestLimitExceeded", true, 1, true},
		{"throttled, retried without the option", 503, "RequestLimitExceeded", false, 2, false},
		{"internal error, retried", 500, "InternalError", true, 2, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var mu sync.Mutex
			calls := 0
			api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				calls++
				first := calls == 1
				mu.Unlock()
				w.Header().Set("Content-Type", "text/xml")
				if first {
					w.WriteHeader(tc.code)
					_, _ = w.Write([]byte(`<Response><Errors><Error><Code>` + tc.errCode + `</Code><Message>m</Message></Error></Errors><RequestID>r</RequestID></Response>`))
					return
				}
				_, _ = w.Write([]byte(`<DescribeVolumesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"><requestId>r</requestId><volumeSet><item><volumeId>vol-1</volumeId><status>available</status></item></volumeSet></DescribeVolumesResponse>`))
			}))
			t.Cleanup(api.Close)
			env := map[string]string{"AWS_ACCESS_KEY_ID": "AKID", "AWS_SECRET_ACCESS_KEY": "s", "AWS_ENDPOINT_URL_EC2": api.URL}
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			c, err := NewClients(ctx, func(k string) string { return env[k] }, "eu-west-1")
			if err != nil {
				t.Fatal(err)
			}
			var opts []func(*ec2.Options)
			if tc.opt {
				opts = append(opts, throttleToCaller)
			}
			_, err = describeVolume(ctx, c.EC2, "vol-1", opts...)
			mu.Lock()
			defer mu.Unlock()
			if calls != tc.wantCalls || (err != nil) != tc.wantErr {
				t.Fatalf("%d calls, err %v; want %d calls, an error: %v", calls, err, tc.wantCalls, tc.wantErr)
			}
			if tc.wantErr && !IsThrottled(err) {
				t.Fatalf("err %v, want RequestLimitExceeded", err)
			}
		})
	}
}
