package agent

import (
	"context"
	"encoding/json"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/handover/handover/imds/imdsmock"
	"github.com/handover/handover/internal/fail"
)

// TestStatusAgainstMetadataMock runs `handover status` against AWS's amazon-ec2-metadata-mock: the
// identity and tags it prints are the ones configured in the mock.
func TestStatusAgainstMetadataMock(t *testing.T) {
	t.Parallel()
	endpoint := imdsmock.Start(t, imdsmock.Config{
		InstanceID:         "i-0aaaabbbbccccdddd",
		Region:             "eu-west-1",
		AvailabilityZone:   "eu-west-1b",
		AvailabilityZoneID: "euw1-az2",
		InstanceType:       "m6i.large",
		Tags:               map[string]string{"handover:group": "orders-db", "Name": "orders"},
	})
	env := mapEnv(map[string]string{"AWS_EC2_METADATA_SERVICE_ENDPOINT": endpoint})
	var out, errOut strings.Builder
	code := Main(context.Background(), []string{"status", "--json"}, Env{Getenv: env, Stdout: &out, Stderr: &errOut})
	if code != fail.CodeOK {
		t.Fatalf("exit %d, stderr: %s", code, errOut.String())
	}
	var st struct {
		InstanceID string            `json:"instance_id"`
		AZ         string            `json:"az"`
		AZID       string            `json:"az_id"`
		Region     string            `json:"region"`
		Type       string            `json:"instance_type"`
		Group      string            `json:"group"`
		Tags       map[string]string `json:"tags"`
		TagsFrom   string            `json:"tags_from"`
	}
	if err := json.Unmarshal([]byte(out.String()), &st); err != nil {
		t.Fatalf("status --json output is not JSON: %v\n%s", err, out.String())
	}
	if st.InstanceID != "i-0aaaabbbbccccdddd" || st.AZ != "eu-west-1b" || st.AZID != "euw1-az2" || st.Region != "eu-west-1" || st.Type != "m6i.large" {
		t.Errorf("identity = %+v", st)
	}
	if st.Group != "orders-db" || st.Tags["Name"] != "orders" || st.TagsFrom != "imds" {
		t.Errorf("group %q, tags %v from %q", st.Group, st.Tags, st.TagsFrom)
	}

	// The text form says the same things.
	out.Reset()
	if code := Main(context.Background(), []string{"status"}, Env{Getenv: env, Stdout: &out, Stderr: &errOut}); code != fail.CodeOK {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	for _, want := range []string{"i-0aaaabbbbccccdddd", "eu-west-1b (euw1-az2)", "group      orders-db", "Name = orders"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("status output lacks %q:\n%s", want, out.String())
		}
	}
}

// TestStatusWithoutIMDS: on a machine with no metadata service, status gives up after its bound with
// exit code 3 and one line that names the endpoint.
func TestStatusWithoutIMDS(t *testing.T) {
	t.Parallel()
	// A port nothing listens on: bind, note the address, close.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	endpoint := "http://" + l.Addr().String()
	l.Close()

	var out, errOut strings.Builder
	env := mapEnv(map[string]string{"AWS_EC2_METADATA_SERVICE_ENDPOINT": endpoint})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	code := Main(ctx, []string{"status", "--imds-timeout", "1s"}, Env{Getenv: env, Stdout: &out, Stderr: &errOut})
	if code != fail.CodePrecondition {
		t.Fatalf("exit %d, want %d; stderr: %s", code, fail.CodePrecondition, errOut.String())
	}
	msg := strings.TrimRight(errOut.String(), "\n")
	if strings.Contains(msg, "\n") {
		t.Errorf("error is not one line:\n%s", msg)
	}
	for _, want := range []string{endpoint, "not on EC2, or IMDS unreachable"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q lacks %q", msg, want)
		}
	}
}

func TestMainUsage(t *testing.T) {
	t.Parallel()
	var out, errOut strings.Builder
	e := Env{Getenv: mapEnv(nil), Stdout: &out, Stderr: &errOut}
	if code := Main(context.Background(), nil, e); code != fail.CodeUsage {
		t.Errorf("no command: exit %d, want %d", code, fail.CodeUsage)
	}
	if code := Main(context.Background(), []string{"frobnicate"}, e); code != fail.CodeUsage {
		t.Errorf("unknown command: exit %d, want %d", code, fail.CodeUsage)
	}
	errOut.Reset()
	if code := Main(context.Background(), []string{"status", "--log-format", "xml"}, e); code != fail.CodeUsage || !strings.Contains(errOut.String(), "--log-format") {
		t.Errorf("bad flag value: exit %d, stderr %q", code, errOut.String())
	}
	out.Reset()
	if code := Main(context.Background(), []string{"version"}, e); code != fail.CodeOK || !strings.HasPrefix(out.String(), "handover ") {
		t.Errorf("version: exit %d, out %q", code, out.String())
	}
}
