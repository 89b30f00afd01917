package sim

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/handover/handover/sim/simtest"
)

func metadata(t *testing.T, c *imds.Client, path string) (string, error) {
	t.Helper()
	out, err := c.GetMetadata(ctxT(t), &imds.GetMetadataInput{Path: path})
	if err != nil {
		return "", err
	}
	defer func() { _ = out.Content.Close() }()
	b, err := io.ReadAll(out.Content)
	return string(b), err
}

func wantStatus(t *testing.T, err error, status int) {
	t.Helper()
	var re *smithyhttp.ResponseError
	if !errors.As(err, &re) || re.HTTPStatusCode() != status {
		t.Fatalf("want HTTP %d, got %v", status, err)
	}
}

func TestIMDSTokenRules(t *testing.T) {
	t.Parallel()
	clock := &fakeClock{t: time.Now()}
	r := startRegion(t, Options{IMDSClock: clock.now})
	id := runInstance(t, r, "us-east-1a", nil)
	env, _ := r.InstanceEnv(id)
	base := env["AWS_EC2_METADATA_SERVICE_ENDPOINT"]
	do := func(method, path string, hdr map[string]string) (int, string) {
		req, _ := http.NewRequest(method, base+path, nil)
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = resp.Body.Close() }()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, _ := do("GET", "/latest/meta-data/instance-id", nil); code != 401 {
		t.Fatalf("GET without token: %d", code)
	}
	if code, _ := do("PUT", "/latest/api/token", nil); code != 400 {
		t.Fatalf("PUT without TTL: %d", code)
	}
	if code, _ := do("PUT", "/latest/api/token", map[string]string{"X-aws-ec2-metadata-token-ttl-seconds": "21601"}); code != 400 {
		t.Fatalf("PUT with TTL too long: %d", code)
	}
	if code, _ := do("PUT", "/latest/api/token", map[string]string{"X-aws-ec2-metadata-token-ttl-seconds": "60", "X-Forwarded-For": "10.0.0.1"}); code != 403 {
		t.Fatalf("PUT through a proxy: %d", code)
	}
	code, tok := do("PUT", "/latest/api/token", map[string]string{"X-aws-ec2-metadata-token-ttl-seconds": "1"})
	if code != 200 {
		t.Fatalf("PUT token: %d", code)
	}
	if code, body := do("GET", "/latest/meta-data/instance-id", map[string]string{"X-aws-ec2-metadata-token": tok}); code != 200 || body != id {
		t.Fatalf("GET with token: %d %q", code, body)
	}
	if code, _ := do("GET", "/latest/meta-data/instance-id", map[string]string{"X-aws-ec2-metadata-token": "forged"}); code != 401 {
		t.Fatalf("GET with a forged token: %d", code)
	}
	clock.advance(999 * time.Millisecond)
	if code, _ := do("GET", "/latest/meta-data/instance-id", map[string]string{"X-aws-ec2-metadata-token": tok}); code != 200 {
		t.Fatalf("GET with a token 1 ms before its TTL ends: %d", code)
	}
	clock.advance(2 * time.Millisecond) // the 1 s TTL is over
	if code, _ := do("GET", "/latest/meta-data/instance-id", map[string]string{"X-aws-ec2-metadata-token": tok}); code != 401 {
		t.Fatalf("GET with an expired token: %d", code)
	}
}

func TestIMDSContent(t *testing.T) {
	t.Parallel()
	r := startRegion(t, Options{})
	c := ec2Client(r)
	ctx := ctxT(t)
	id := runInstance(t, r, "us-east-1b", map[string]string{"handover:group": "web", "bad/key": "x", "with space": "y"})
	idle(t, r)
	m := imdsClient(t, r, id)
	for path, want := range map[string]string{
		"instance-id": id, "instance-type": "t3.micro", "placement/availability-zone": "us-east-1b",
		"placement/availability-zone-id": "use1-az2", "placement/region": "us-east-1",
		"tags/instance":                "handover:group",
		"tags/instance/handover:group": "web",
		"block-device-mapping/":        "ami\nroot",
	} {
		got, err := metadata(t, m, path)
		if err != nil || got != want {
			t.Errorf("%s: got %q, %v; want %q", path, got, err, want)
		}
	}
	for _, path := range []string{"public-ipv4", "autoscaling/target-lifecycle-state", "spot/instance-action", "events/recommendations/rebalance"} {
		if _, err := metadata(t, m, path); err == nil {
			t.Errorf("%s: want 404", path)
		} else {
			wantStatus(t, err, 404)
		}
	}
	doc, err := m.GetInstanceIdentityDocument(ctx, &imds.GetInstanceIdentityDocumentInput{})
	if err != nil {
		t.Fatal(err)
	}
	if doc.InstanceID != id || doc.AvailabilityZone != "us-east-1b" || doc.Region != "us-east-1" || doc.AccountID != accountID || doc.PendingTime.IsZero() {
		t.Fatalf("identity document: %+v", doc)
	}
	region, err := m.GetRegion(ctx, &imds.GetRegionInput{})
	if err != nil || region.Region != "us-east-1" {
		t.Fatalf("region: %v %v", region, err)
	}

	vol := createVolume(t, r, "us-east-1b", 1, nil)
	eip, err := c.AllocateAddress(ctx, &ec2.AllocateAddressInput{Domain: ec2types.DomainTypeVpc})
	if err != nil {
		t.Fatal(err)
	}
	idle(t, r)
	if _, err := c.AttachVolume(ctx, &ec2.AttachVolumeInput{VolumeId: aws.String(vol), InstanceId: aws.String(id), Device: aws.String("/dev/sdf")}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.AssociateAddress(ctx, &ec2.AssociateAddressInput{AllocationId: eip.AllocationId, InstanceId: aws.String(id)}); err != nil {
		t.Fatal(err)
	}
	idle(t, r)
	if got, _ := metadata(t, m, "block-device-mapping/ebs1"); got != "/dev/sdf" {
		t.Errorf("ebs1: %q", got)
	}
	if got, _ := metadata(t, m, "public-ipv4"); got != *eip.PublicIp {
		t.Errorf("public-ipv4: %q", got)
	}
	at := time.Now().Add(time.Hour).UTC().Truncate(time.Second)
	if err := r.SetSpotAction(id, "terminate", at); err != nil {
		t.Fatal(err)
	}
	if err := r.SetRebalance(id, at); err != nil {
		t.Fatal(err)
	}
	var spot struct{ Action, Time string }
	got, _ := metadata(t, m, "spot/instance-action")
	if err := json.Unmarshal([]byte(got), &spot); err != nil || spot.Action != "terminate" || spot.Time != at.Format(time.RFC3339) {
		t.Errorf("spot: %q %v", got, err)
	}
	if got, _ := metadata(t, m, "events/recommendations/rebalance"); !strings.Contains(got, `"noticeTime":"`+at.Format(time.RFC3339)) {
		t.Errorf("rebalance: %q", got)
	}
	if err := r.SetSpotAction(id, "", time.Time{}); err != nil {
		t.Fatal(err)
	}
	if _, err := metadata(t, m, "spot/instance-action"); err == nil {
		t.Error("spot notice not cleared")
	}
}

func TestIMDSTagsDisabled(t *testing.T) {
	t.Parallel()
	r := startRegion(t, Options{})
	out, err := ec2Client(r).RunInstances(ctxT(t), &ec2.RunInstancesInput{ImageId: aws.String("ami-1"), MinCount: aws.Int32(1), MaxCount: aws.Int32(1),
		TagSpecifications: []ec2types.TagSpecification{{ResourceType: ec2types.ResourceTypeInstance, Tags: toTags(map[string]string{"k": "v"})}}})
	if err != nil {
		t.Fatal(err)
	}
	m := imdsClient(t, r, *out.Instances[0].InstanceId)
	_, err = metadata(t, m, "tags/instance")
	wantStatus(t, err, 404)
	_, err = metadata(t, m, "tags/instance/k")
	wantStatus(t, err, 404)
}

func TestSpotActionIsCarriedOut(t *testing.T) {
	t.Parallel()
	r := startRegion(t, Options{})
	id := runInstance(t, r, "us-east-1a", nil)
	idle(t, r)
	if err := r.SetSpotAction(id, "terminate", time.Now().Add(50*time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	simtest.Eventually(t, waitBound, "spot termination", func() (bool, string) {
		out, err := ec2Client(r).DescribeInstances(context.Background(), &ec2.DescribeInstancesInput{InstanceIds: []string{id}})
		if err != nil {
			return false, err.Error()
		}
		s := out.Reservations[0].Instances[0].State.Name
		return s == ec2types.InstanceStateNameTerminated, "state " + string(s)
	})
}
