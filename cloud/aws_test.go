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
