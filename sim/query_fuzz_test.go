package sim

import (
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// Fuzz targets of the simulator's Query decoding (params.go) and of its request handling (server.go). Run
// one with `go test -run '^$' -fuzz '^FuzzQueryDecode$' -fuzztime 60s ./sim/`.

// errCaptured stops a request once captureHTTP has its body: nothing is sent anywhere.
var errCaptured = errors.New("captured")

// captureHTTP is an SDK HTTP client that keeps the body of each request and answers none.
type captureHTTP struct{ bodies *[]string }

func (c captureHTTP) Do(r *http.Request) (*http.Response, error) {
	b, err := io.ReadAll(r.Body)
	if err != nil {
		return nil, err
	}
	*c.bodies = append(*c.bodies, string(b))
	return nil, errCaptured
}

// encodedParams is what the SDK sends for one call, read back as the simulator reads every request.
func encodedParams(t *testing.T, call func(ctx context.Context, o func(*ec2.Options)) error) params {
	t.Helper()
	var bodies []string
	opt := func(o *ec2.Options) { o.HTTPClient = captureHTTP{&bodies}; o.RetryMaxAttempts = 1 }
	if err := call(context.Background(), opt); !errors.Is(err, errCaptured) {
		t.Fatalf("the SDK did not get as far as sending: %v", err)
	}
	if len(bodies) != 1 {
		t.Fatalf("%d requests, want 1", len(bodies))
	}
	// As serveAPI reads it: req.ParseForm on a POST body.
	req := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(bodies[0]))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if err := req.ParseForm(); err != nil {
		t.Fatalf("the SDK's body %q does not parse: %v", bodies[0], err)
	}
	return params{req.Form}
}

func fuzzEC2Client() *ec2.Client {
	return ec2.NewFromConfig(aws.Config{Region: "us-east-1", Credentials: credentials.NewStaticCredentialsProvider("AKIDFUZZ", "secret", ""),
		BaseEndpoint: aws.String("http://127.0.0.1:1")})
}

// FuzzQueryDecode: what the SDK encodes (filters with several values, id lists, tags, tag specifications)
// the simulator decodes to exactly the same values, in the same order. Tags with an empty key are left
// out: EC2 requires a key, and the simulator drops one without a key.
func FuzzQueryDecode(f *testing.F) {
	f.Add("tag:handover:group", "orders", "o*", "vol-0123456789abcdef0", "handover:group", "orders", "Name", "")
	f.Add("availability-zone", "us-east-1a", "", "", "k", "v=1&x=2", "a.b", "c%20d")
	f.Add("tag:a.1.Value", "x\ny", "\u00e9\u00e8", "a,b", "Filter.1.Name", "Tag.2.Key", "k;k", "v;v")
	f.Fuzz(func(t *testing.T, fname, fv1, fv2, id, k1, v1, k2, v2 string) {
		c := fuzzEC2Client()
		filters := []ec2types.Filter{{Name: aws.String(fname), Values: []string{fv1, fv2}}, {Name: aws.String("status"), Values: []string{fv2}}}
		ids := []string{id, id + "x"}
		p := encodedParams(t, func(ctx context.Context, o func(*ec2.Options)) error {
			_, err := c.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{Filters: filters, VolumeIds: ids}, o)
			return err
		})
		var gotFilters []ec2types.Filter
		for _, fl := range p.filters() {
			gotFilters = append(gotFilters, ec2types.Filter{Name: aws.String(fl.Name), Values: fl.Values})
		}
		if !reflect.DeepEqual(gotFilters, filters) {
			t.Fatalf("filters %+v decode as %+v", filters, gotFilters)
		}
		if got := p.list("VolumeId"); !reflect.DeepEqual(got, ids) {
			t.Fatalf("VolumeIds %q decode as %q", ids, got)
		}

		want := map[string]string{}
		var tags []ec2types.Tag
		for _, kv := range [][2]string{{k1, v1}, {k2, v2}} {
			if kv[0] == "" {
				continue
			}
			if _, dup := want[kv[0]]; dup {
				continue
			}
			want[kv[0]] = kv[1]
			tags = append(tags, ec2types.Tag{Key: aws.String(kv[0]), Value: aws.String(kv[1])})
		}
		p = encodedParams(t, func(ctx context.Context, o func(*ec2.Options)) error {
			_, err := c.CreateTags(ctx, &ec2.CreateTagsInput{Resources: ids, Tags: tags}, o)
			return err
		})
		if got := p.tags("Tag"); !reflect.DeepEqual(got, want) && !(len(got) == 0 && len(want) == 0) {
			t.Fatalf("tags %q decode as %q", want, got)
		}
		p = encodedParams(t, func(ctx context.Context, o func(*ec2.Options)) error {
			_, err := c.CreateVolume(ctx, &ec2.CreateVolumeInput{AvailabilityZone: aws.String("us-east-1a"), Size: aws.Int32(1),
				TagSpecifications: []ec2types.TagSpecification{{ResourceType: ec2types.ResourceTypeVolume, Tags: tags}}}, o)
			return err
		})
		specs := p.tagSpecs("TagSpecification")
		if got := specs["volume"]; len(specs) != 1 || (!reflect.DeepEqual(got, want) && !(len(got) == 0 && len(want) == 0)) {
			t.Fatalf("tag specification %q decodes as %q", want, specs)
		}
	})
}

// routesHTTP is an SDK HTTP client that serves each request with the region's handler, in memory.
type routesHTTP struct{ h http.Handler }

func (c routesHTTP) Do(r *http.Request) (*http.Response, error) {
	w := httptest.NewRecorder()
	c.h.ServeHTTP(w, r)
	return w.Result(), nil
}

// fuzzActions are the actions FuzzServeAPI sends: all but those that start instances (each serves its
// own IMDS on a loopback port) or attach volumes (a loop device, as root).
func fuzzActions() []string {
	var out []string
	skip := map[string]bool{"RunInstances": true, "StartInstances": true, "AttachVolume": true, "CreateAutoScalingGroup": true,
		"UpdateAutoScalingGroup": true, "SetDesiredCapacity": true, "PutWarmPool": true}
	for _, m := range []map[string]actionFunc{ec2Actions, asgActions} {
		for a := range m {
			if !skip[a] {
				out = append(out, a)
			}
		}
	}
	sort.Strings(out)
	return out
}

// FuzzServeAPI sends the simulator's handler an action with a fuzzed query (its resources' IDs given as
// {vol}, {snap}, {eip}), in memory. Properties: no request panics the handler; with no fault injected,
// bad input is answered with a 4xx error, never a 5xx (the SDK would retry a 5xx as AWS's fault); every
// answer is well-formed XML, and an error names its code.
func FuzzServeAPI(f *testing.F) {
	r, err := New(Options{StateDir: f.TempDir(), Speed: 1000, Seed: 1})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = r.Close() })
	if err := r.Start("127.0.0.1:0"); err != nil { // transitions run once started; requests still go in memory
		f.Fatal(err)
	}
	c := ec2.NewFromConfig(aws.Config{Region: "us-east-1", Credentials: credentials.NewStaticCredentialsProvider("AKIDFUZZ", "secret", ""),
		BaseEndpoint: aws.String("http://sim"), HTTPClient: routesHTTP{r.routes()}}, func(o *ec2.Options) { o.RetryMaxAttempts = 1 })
	ctx := context.Background()
	vol, err := c.CreateVolume(ctx, &ec2.CreateVolumeInput{AvailabilityZone: aws.String("us-east-1a"), Size: aws.Int32(1)})
	if err != nil {
		f.Fatal(err)
	}
	if err := r.WaitIdle(ctx); err != nil { // the volume is available
		f.Fatal(err)
	}
	snap, err := c.CreateSnapshot(ctx, &ec2.CreateSnapshotInput{VolumeId: vol.VolumeId})
	if err != nil {
		f.Fatal(err)
	}
	eip, err := c.AllocateAddress(ctx, &ec2.AllocateAddressInput{Domain: ec2types.DomainTypeVpc})
	if err != nil {
		f.Fatal(err)
	}
	ids := strings.NewReplacer("{vol}", aws.ToString(vol.VolumeId), "{snap}", aws.ToString(snap.SnapshotId), "{eip}", aws.ToString(eip.AllocationId))
	actions := fuzzActions()
	index := map[string]int{}
	for i, a := range actions {
		index[a] = i
	}
	for _, s := range []struct{ action, q string }{
		{"DescribeVolumes", "Filter.1.Name=tag:a&Filter.1.Value.1=*&MaxResults=5"},
		{"DescribeVolumes", "VolumeId.1={vol}&MaxResults=5"},
		{"CreateTags", "ResourceId.1={vol}&Tag.1.Key=a&Tag.1.Value=b"},
		{"CreateTags", "ResourceId.1={eip}&Tag.1.Key=aws:x&Tag.1.Value=b"},
		{"DeleteTags", "ResourceId.1={snap}&Tag.1.Key=a"},
		{"CreateVolume", "AvailabilityZone=us-east-1a&Size=1&VolumeType=gp3&Iops=-1"},
		{"CreateVolume", "AvailabilityZone=us-east-1b&SnapshotId={snap}&Encrypted=true&KmsKeyId=k"},
		{"CreateSnapshot", "VolumeId={vol}&TagSpecification.1.ResourceType=volume"},
		{"ModifyVolume", "VolumeId={vol}&Size=99999999999"},
		{"DescribeSnapshots", "Owner.1=self&Filter.1.Name=nope"},
		{"AssociateAddress", "AllocationId={eip}&InstanceId=i-00000000"},
		{"DescribeAutoScalingGroups", "AutoScalingGroupNames.member.1=x&MaxRecords=0"},
		{"CompleteLifecycleAction", "AutoScalingGroupName=g&LifecycleHookName=h&LifecycleActionResult=NOPE"},
		{"PutLifecycleHook", "AutoScalingGroupName=g&LifecycleHookName=h&HeartbeatTimeout=abc"},
		{"CreateLaunchTemplate", "LaunchTemplateName=t&LaunchTemplateData.Placement.AvailabilityZone=x"},
	} {
		f.Add(uint16(index[s.action]), s.q)
	}
	h := r.routes()
	f.Fuzz(func(t *testing.T, actionIdx uint16, query string) {
		action := actions[int(actionIdx)%len(actions)]
		version := "2016-11-15"
		if _, ok := asgActions[action]; ok {
			version = "2011-01-01"
		}
		body := "Action=" + action + "&Version=" + version + "&" + ids.Replace(query)
		req := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Authorization", "AWS4-HMAC-SHA256 Credential=AKIDFUZZ/20240101/us-east-1/ec2/aws4_request")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		res := w.Result()
		out := w.Body.Bytes()
		if res.StatusCode >= 500 {
			t.Fatalf("%s %q: HTTP %d for bad input:\n%s", action, query, res.StatusCode, out)
		}
		dec := xml.NewDecoder(bytes.NewReader(out))
		var code string
		for inCode := false; ; {
			tok, err := dec.Token()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("%s %q: the answer is not XML (%v):\n%s", action, query, err, out)
			}
			switch tk := tok.(type) {
			case xml.StartElement:
				inCode = tk.Name.Local == "Code"
			case xml.CharData:
				if inCode {
					code += string(tk)
				}
			case xml.EndElement:
				inCode = false
			}
		}
		if res.StatusCode != http.StatusOK && code == "" {
			t.Fatalf("%s %q: HTTP %d without an error code:\n%s", action, query, res.StatusCode, out)
		}
	})
}
