package cloudformation

import (
	"archive/zip"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/handover/handover/sim/motoserver"
)

// Each template deployed with CloudFormation CreateStack into moto_server (moto 5.2.1, preinstalled with
// the AWS CLI), the real template, unchanged. moto's CloudFormation makes the resources it models through
// its EC2, Auto Scaling, IAM, Lambda and EventBridge backends, and the tests read them back through those
// APIs. What moto does not model is listed in motoGaps, and each gap is asserted as such: when a moto
// release starts modelling one, its test fails and the list (and the README's copy) must be updated. The
// parts moto skips are checked from the template instead (template_test.go), never left unchecked.

// motoGap is one thing of a template that moto leaves out or changes (what: as the README lists it),
// and how the test deals with it.
type motoGap struct {
	what, checked string
}

var motoGaps = map[string][]motoGap{
	"asg-singleton.yaml": {
		{"the group's LifecycleHookSpecificationList",
			"moto creates no lifecycle hook: DescribeLifecycleHooks returns none; the hooks are checked in the template (TestAutoScalingSingletonShape)"},
		{"the Elastic IP's Tags", "moto's AWS::EC2::EIP ignores them: the address has no tags in moto; the tag is checked in the template"},
		{"the group's InstanceMaintenancePolicy", "moto does not keep it: DescribeAutoScalingGroups has none; checked in the template"},
		{"the instance the group launches does not get the launch template's MetadataOptions or IamInstanceProfile",
			"the launch template version itself holds them and is checked; the instance's own metadata options are moto's defaults"},
		{"UpdatePolicy (rolling update) and DeletionPolicy are not exercised", "no stack update or delete is made"},
	},
	"standby-failover.yaml": {
		{"AWS::CloudWatch::Alarm (moto's CloudFormation does not model it)",
			"moto lists it without a type or physical ID and no alarm exists; the alarms and their permissions are checked in the template (TestStandbyFailoverShape), the permissions also in moto"},
		{"the Elastic IP's Tags", "ignored: the address has no tags in moto; checked in the template"},
		{"AWS::EC2::Instance's LaunchTemplate (the IMDSv2 metadata options)",
			"ignored: the launch template is created and checked; the instances' own metadata options are moto's defaults"},
		{"the role's ManagedPolicyArns (AWSLambdaBasicExecutionRole)", "not attached: ListAttachedRolePolicies is empty in moto; checked in the template"},
		{"AWS::Lambda::Permission is listed without a physical ID (CloudFormation's is the statement ID)",
			"the permissions are read back from the function's policy (GetPolicy)"},
		{"the function is created from the S3 zip but never invoked (moto would need Docker)",
			"a stand-in zip with a bootstrap file; the function's code is tested in cmd/handover-failover"},
	},
}

// awsCLI runs the AWS CLI against moto with moto's isolated environment, and reads EC2 and Auto Scaling
// through the SDK (the production code's clients: an AWS CLI call costs seconds of Python start-up).
type awsCLI struct {
	t        *testing.T
	bin      string
	endpoint string
	env      []string
	ec2      *ec2.Client
	as       *autoscaling.Client
}

func newAWSCLI(t *testing.T, endpoint string) *awsCLI {
	t.Helper()
	bin, err := exec.LookPath("aws")
	if err != nil {
		msg := "the AWS CLI is not installed: the moto deployment tests need it (pip install awscli)"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	cfg := aws.Config{Region: testRegion, Credentials: credentials.NewStaticCredentialsProvider("AKIDMOTO", "moto", "")}
	return &awsCLI{t: t, bin: bin, endpoint: endpoint, env: motoserver.Env(t),
		ec2: ec2.NewFromConfig(cfg, func(o *ec2.Options) { o.BaseEndpoint = aws.String(endpoint) }),
		as:  autoscaling.NewFromConfig(cfg, func(o *autoscaling.Options) { o.BaseEndpoint = aws.String(endpoint) })}
}

func (c *awsCLI) sdk(out any, err error) any {
	c.t.Helper()
	return sdkJSON(c.t, out, err)
}

// sdkJSON is an SDK output as the same JSON values the CLI prints, so that both are read alike.
func sdkJSON(t *testing.T, out any, err error) any {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(out)
	if err != nil {
		t.Fatal(err)
	}
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	return v
}

// ok runs a command that must succeed and returns its parsed JSON output (nil when it prints nothing).
func (c *awsCLI) ok(args ...string) any {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.bin, append([]string{"--endpoint-url", c.endpoint, "--output", "json", "--region", testRegion}, args...)...)
	cmd.Env = c.env
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		c.t.Fatalf("aws %s: %v: %s", strings.Join(args, " "), err, errb.String())
	}
	var v any
	if s := bytes.TrimSpace(out.Bytes()); len(s) > 0 {
		if err := json.Unmarshal(s, &v); err != nil {
			c.t.Fatalf("aws %s: output is not JSON (%v): %s", strings.Join(args, " "), err, s)
		}
	}
	return v
}

// get walks parsed JSON: string keys index objects, ints index lists.
func get(v any, path ...any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, _ := v.(map[string]any)
			v = m[k]
		case int:
			l, _ := v.([]any)
			if k >= len(l) {
				return nil
			}
			v = l[k]
		}
	}
	return v
}

func str(v any, path ...any) string { s, _ := get(v, path...).(string); return s }

// defaultNetwork is moto's default VPC: a subnet in us-east-1a and one in us-east-1b, a security group,
// and an image to launch.
func (c *awsCLI) defaultNetwork(ctx context.Context) (subnetA, subnetB, sg, image string) {
	c.t.Helper()
	subnets, err := c.ec2.DescribeSubnets(ctx, &ec2.DescribeSubnetsInput{Filters: []ec2types.Filter{{Name: aws.String("default-for-az"), Values: []string{"true"}}}})
	if err != nil {
		c.t.Fatal(err)
	}
	for _, s := range subnets.Subnets {
		switch aws.ToString(s.AvailabilityZone) {
		case "us-east-1a":
			subnetA = aws.ToString(s.SubnetId)
		case "us-east-1b":
			subnetB = aws.ToString(s.SubnetId)
		}
	}
	sgs, err := c.ec2.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{GroupNames: []string{"default"}})
	if err != nil || len(sgs.SecurityGroups) == 0 {
		c.t.Fatalf("default security group: %v", err)
	}
	sg = aws.ToString(sgs.SecurityGroups[0].GroupId)
	images, err := c.ec2.DescribeImages(ctx, &ec2.DescribeImagesInput{})
	if err != nil || len(images.Images) == 0 {
		c.t.Fatalf("moto has no image to launch: %v", err)
	}
	image = aws.ToString(images.Images[0].ImageId)
	if subnetA == "" || subnetB == "" || sg == "" || image == "" {
		c.t.Fatalf("moto's default network: subnets %q %q, security group %q, image %q", subnetA, subnetB, sg, image)
	}
	return subnetA, subnetB, sg, image
}

// stackResource is one resource of a deployed stack.
type stackResource struct{ typ, physical, status string }

// createStack deploys the template and returns its resources by logical ID.
func (c *awsCLI) createStack(name, file string, params map[string]string, capability string) map[string]stackResource {
	c.t.Helper()
	args := []string{"cloudformation", "create-stack", "--stack-name", name, "--template-body", "file://" + file, "--capabilities", capability, "--parameters"}
	var keys []string
	for k := range params {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		args = append(args, fmt.Sprintf("ParameterKey=%s,ParameterValue=%s", k, params[k]))
	}
	c.ok(args...)
	stack := c.ok("cloudformation", "describe-stacks", "--stack-name", name)
	if s := str(stack, "Stacks", 0, "StackStatus"); s != "CREATE_COMPLETE" {
		c.t.Fatalf("stack %s: %s (%s)", name, s, str(stack, "Stacks", 0, "StackStatusReason"))
	}
	out := map[string]stackResource{}
	for _, r := range get(c.ok("cloudformation", "describe-stack-resources", "--stack-name", name), "StackResources").([]any) {
		out[str(r, "LogicalResourceId")] = stackResource{str(r, "ResourceType"), str(r, "PhysicalResourceId"), str(r, "ResourceStatus")}
	}
	return out
}

// checkResources: every resource of the template (whose condition holds) was made, except those of a
// type moto does not model, which moto lists under no logical ID ("None").
func checkResources(t *testing.T, tp template, s scope, got map[string]stackResource, notModelled map[string]bool) {
	t.Helper()
	for id, r := range tp.resources() {
		if c, ok := r["Condition"].(string); ok {
			if on, err := s.condition(c); err != nil || !on {
				continue
			}
		}
		typ := r["Type"].(string)
		g, ok := got[id]
		switch {
		case notModelled[typ] && ok:
			t.Errorf("moto now makes %s (%s): update motoGaps and the README's list", id, typ)
		case notModelled[typ]:
		case !ok || g.typ != typ || g.status != "CREATE_COMPLETE" || (g.physical == "" && typ != "AWS::Lambda::Permission"):
			t.Errorf("resource %s (%s): moto made %+v", id, typ, g)
		}
	}
}

// rolePolicyInMoto is the role's inline policies as moto keeps them, joined in the order given. moto
// returns a document that CloudFormation gave it as a Python literal rather than JSON (single quotes),
// so python3 (moto's own interpreter) reads it.
func (c *awsCLI) rolePolicyInMoto(role string, names ...string) any {
	c.t.Helper()
	statements := []any{}
	for _, n := range names {
		v := get(c.ok("iam", "get-role-policy", "--role-name", role, "--policy-name", n), "PolicyDocument")
		doc, isText := v.(string)
		if isText && json.Unmarshal([]byte(doc), &v) != nil {
			py := exec.Command("python3", "-c", "import ast, json, sys; print(json.dumps(ast.literal_eval(sys.stdin.read())))")
			py.Stdin = strings.NewReader(doc)
			out, err := py.Output()
			if err != nil {
				c.t.Fatalf("policy %s of %s is neither JSON nor a Python literal (%v): %s", n, role, err, doc)
			}
			if err := json.Unmarshal(out, &v); err != nil {
				c.t.Fatal(err)
			}
		}
		statements = append(statements, listOf(get(v, "Statement"))...)
	}
	return map[string]any{"Version": "2012-10-17", "Statement": statements}
}

func tagsOf(v any) map[string]string {
	out := map[string]string{}
	for _, tag := range listOf(v) {
		out[str(tag, "Key")] = str(tag, "Value")
	}
	return out
}

// TestDeployTemplatesToMoto deploys each template into one moto_server (its EC2 backend takes tens of
// seconds to start: once is enough), one after the other.
func TestDeployTemplatesToMoto(t *testing.T) {
	t.Parallel()
	endpoint := motoserver.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	t.Run("asg-singleton", func(t *testing.T) { testDeployAutoScalingSingleton(t, ctx, endpoint) })
	t.Run("standby-failover", func(t *testing.T) { testDeployStandbyFailover(t, ctx, endpoint) })
}

// testDeployAutoScalingSingleton deploys asg-singleton.yaml twice (without and with a KMS key) and
// reads back what moto made: the role's policies equal handover iam-policy's for the stack's own group,
// region and account; the instance profile holds the role; the launch template requires IMDSv2, puts
// tags in metadata, runs scripts/user-data.sh and tags the instances with handover's settings; the group
// is 1/1/1 over the two subnets, tags its instance with handover:group, and launched it in one of them.
func testDeployAutoScalingSingleton(t *testing.T, ctx context.Context, endpoint string) {
	c := newAWSCLI(t, endpoint)
	tp := readTemplate(t, "asg-singleton.yaml")
	subnetA, subnetB, sg, image := c.defaultNetwork(ctx)
	script, err := os.ReadFile("../../scripts/user-data.sh")
	if err != nil {
		t.Fatal(err)
	}
	notModelled := map[string]bool{}
	for _, tc := range []struct {
		group, kmsKey string
		policies      []string
		args          []string
	}{
		{testGroup, "", []string{"handover"}, []string{"--keep", "24"}},
		{"g2", testKMSKey, []string{"handover", "handover-kms-key"}, []string{"--keep", "24", "--kms-key", testKMSKey}},
	} {
		params := map[string]string{"GroupName": tc.group, "ImageId": image, "SubnetA": subnetA, "SubnetB": subnetB, "SecurityGroupIds": sg, "KmsKeyArn": tc.kmsKey}
		res := c.createStack("handover-"+tc.group, "asg-singleton.yaml", params, "CAPABILITY_IAM")
		s := newScope(tp, params)
		checkResources(t, tp, s, res, notModelled)

		role := res["InstanceRole"].physical
		got := c.rolePolicyInMoto(role, tc.policies...)
		want := iamPolicy(t, append([]string{"--commands", "up,down,watch,snapshot,status", "--group", tc.group}, tc.args...)...)
		if !reflect.DeepEqual(got, want) {
			g, _ := json.MarshalIndent(got, "", " ")
			t.Errorf("group %s: the role's policies in moto are not what handover iam-policy prints:\n%s", tc.group, g)
		}
		profile := c.ok("iam", "get-instance-profile", "--instance-profile-name", res["InstanceProfile"].physical)
		if str(profile, "InstanceProfile", "Roles", 0, "RoleName") != role {
			t.Errorf("instance profile %v does not hold %s", profile, role)
		}

		ltv := c.sdk(c.ec2.DescribeLaunchTemplateVersions(ctx, &ec2.DescribeLaunchTemplateVersionsInput{LaunchTemplateId: aws.String(res["LaunchTemplate"].physical)}))
		data := get(ltv, "LaunchTemplateVersions", 0, "LaunchTemplateData")
		if md := get(data, "MetadataOptions"); str(md, "HttpTokens") != "required" || str(md, "InstanceMetadataTags") != "enabled" || get(md, "HttpPutResponseHopLimit") != 1.0 {
			t.Errorf("launch template metadata options %v", md)
		}
		if !strings.HasSuffix(str(data, "IamInstanceProfile", "Arn"), "/"+res["InstanceProfile"].physical) {
			t.Errorf("launch template profile %v, want %s", get(data, "IamInstanceProfile"), res["InstanceProfile"].physical)
		}
		ud, err := base64.StdEncoding.DecodeString(str(data, "UserData"))
		if err != nil || string(ud) != string(script) {
			t.Errorf("launch template user data is not scripts/user-data.sh (%v)", err)
		}
		ltTags := tagsOf(get(data, "TagSpecifications", 0, "Tags"))
		wantTags := map[string]string{"handover:launch-hook": "handover-launch", "handover:terminate-hook": "handover-terminate", "handover:volume": "data:/dev/sdf:/data",
			"handover:size": "10", "handover:type": "gp3", "handover:encrypted": "true", "handover:kms-key-id": tc.kmsKey, "handover:keep": "24", "handover:pre-stop": ""}
		if !reflect.DeepEqual(ltTags, wantTags) {
			t.Errorf("instance tags of the launch template %v, want %v", ltTags, wantTags)
		}

		asg := get(c.sdk(c.as.DescribeAutoScalingGroups(ctx, &autoscaling.DescribeAutoScalingGroupsInput{AutoScalingGroupNames: []string{tc.group}})), "AutoScalingGroups", 0)
		if asg == nil {
			t.Fatalf("no Auto Scaling group %s", tc.group)
		}
		for _, k := range []string{"MinSize", "MaxSize", "DesiredCapacity"} {
			if get(asg, k) != 1.0 {
				t.Errorf("group %s: %s = %v, want 1", tc.group, k, get(asg, k))
			}
		}
		if z := str(asg, "VPCZoneIdentifier"); z != subnetA+","+subnetB {
			t.Errorf("group subnets %q, want %s,%s", z, subnetA, subnetB)
		}
		if get(asg, "CapacityRebalance") != false || str(asg, "LaunchTemplate", "LaunchTemplateId") != res["LaunchTemplate"].physical {
			t.Errorf("group: capacity rebalance %v, launch template %v", get(asg, "CapacityRebalance"), get(asg, "LaunchTemplate"))
		}
		if tag := get(asg, "Tags", 0); str(tag, "Key") != "handover:group" || str(tag, "Value") != tc.group || get(tag, "PropagateAtLaunch") != true {
			t.Errorf("group tags %v, want handover:group=%s propagated", get(asg, "Tags"), tc.group)
		}
		id := str(asg, "Instances", 0, "InstanceId")
		inst := get(c.sdk(c.ec2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{id}})), "Reservations", 0, "Instances", 0)
		it := tagsOf(get(inst, "Tags"))
		if it["handover:group"] != tc.group || it["handover:launch-hook"] != "handover-launch" {
			t.Errorf("the group's instance has tags %v: want handover:group=%s and the launch template's settings", it, tc.group)
		}
		if sub := str(inst, "SubnetId"); sub != subnetA && sub != subnetB {
			t.Errorf("the instance is in %s, not in the group's subnets", sub)
		}

		// The gaps, as they are today.
		if hooks := get(c.sdk(c.as.DescribeLifecycleHooks(ctx, &autoscaling.DescribeLifecycleHooksInput{AutoScalingGroupName: aws.String(tc.group)})), "LifecycleHooks"); len(listOf(hooks)) != 0 {
			t.Errorf("moto now creates the lifecycle hooks %v: update motoGaps, the README and check them here", hooks)
		}
		if get(asg, "InstanceMaintenancePolicy") != nil {
			t.Errorf("moto now keeps the maintenance policy %v: update motoGaps and check it here", get(asg, "InstanceMaintenancePolicy"))
		}
		eip := get(c.sdk(c.ec2.DescribeAddresses(ctx, &ec2.DescribeAddressesInput{PublicIps: []string{res["ElasticIP"].physical}})), "Addresses", 0)
		if eip == nil || len(listOf(get(eip, "Tags"))) != 0 {
			t.Errorf("address %v: moto used to drop its tags; if it keeps them now, update motoGaps and check handover:group", eip)
		}
		if str(inst, "MetadataOptions", "HttpTokens") == "required" {
			t.Error("moto now applies the launch template's metadata options to the instance: update motoGaps")
		}
	}
}

// standbyGroup is the standby stack's group, another than the singleton stacks' in the same moto.
const standbyGroup = "g3"

// standInFunctionZip is a zip with a bootstrap at its root: moto stores the function's code, never runs it.
func standInFunctionZip(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "handover-failover-amd64.zip")
	var b bytes.Buffer
	z := zip.NewWriter(&b)
	w, err := z.Create("bootstrap")
	if err == nil {
		_, err = w.Write([]byte("stand-in: moto does not run the function\n"))
	}
	if err := errors.Join(err, z.Close(), os.WriteFile(path, b.Bytes(), 0o644)); err != nil {
		t.Fatal(err)
	}
	return path
}

// testDeployStandbyFailover deploys standby-failover.yaml and reads back what moto made: the two
// instances with their group and role tags in their subnets, the address on the primary, the function
// (provided.al2023, bootstrap, the zip from S3, its timeout and environment) with the role whose policy
// is handover iam-policy --commands failover, the permissions for both alarms and the rule, and the rule
// over both instances' state changes targeting the function.
func testDeployStandbyFailover(t *testing.T, ctx context.Context, endpoint string) {
	c := newAWSCLI(t, endpoint)
	tp := readTemplate(t, "standby-failover.yaml")
	subnetA, subnetB, sg, image := c.defaultNetwork(ctx)
	c.ok("s3api", "create-bucket", "--bucket", "handover-lambda-test")
	c.ok("s3api", "put-object", "--bucket", "handover-lambda-test", "--key", "handover-failover-amd64.zip", "--body", standInFunctionZip(t))
	params := map[string]string{"GroupName": standbyGroup, "ImageId": image, "PrimarySubnet": subnetA, "StandbySubnet": subnetB, "SecurityGroupIds": sg,
		"LambdaBucket": "handover-lambda-test"}
	res := c.createStack("handover-standby", "standby-failover.yaml", params, "CAPABILITY_IAM")
	s := newScope(tp, params)
	checkResources(t, tp, s, res, map[string]bool{"AWS::CloudWatch::Alarm": true})
	if n := len(listOf(get(c.ok("cloudwatch", "describe-alarms"), "MetricAlarms"))); n != 0 {
		t.Errorf("moto now makes %d alarms: update motoGaps and check them here", n)
	}

	primary, standby := res["Primary"].physical, res["Standby"].physical
	for id, want := range map[string]struct{ role, subnet string }{primary: {"primary", subnetA}, standby: {"standby", subnetB}} {
		inst := get(c.sdk(c.ec2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{id}})), "Reservations", 0, "Instances", 0)
		tags := tagsOf(get(inst, "Tags"))
		if tags["handover:group"] != standbyGroup || tags["handover:role"] != want.role || str(inst, "SubnetId") != want.subnet {
			t.Errorf("%s: tags %v in %s, want handover:group=%s handover:role=%s in %s", id, tags, str(inst, "SubnetId"), standbyGroup, want.role, want.subnet)
		}
	}
	eip := get(c.sdk(c.ec2.DescribeAddresses(ctx, &ec2.DescribeAddressesInput{PublicIps: []string{res["ElasticIP"].physical}})), "Addresses", 0)
	if str(eip, "InstanceId") != primary {
		t.Errorf("the address is on %q, want the primary %s", str(eip, "InstanceId"), primary)
	}

	fnName := res["Function"].physical
	fn := c.ok("lambda", "get-function-configuration", "--function-name", fnName)
	role := res["FunctionRole"].physical
	if str(fn, "Runtime") != "provided.al2023" || str(fn, "Handler") != "bootstrap" || get(fn, "Timeout") != 360.0 ||
		!reflect.DeepEqual(get(fn, "Architectures"), []any{"x86_64"}) || !strings.HasSuffix(str(fn, "Role"), ":role/"+role) {
		t.Errorf("function configuration %v", fn)
	}
	wantEnv := map[string]any{"HANDOVER_GROUP": standbyGroup, "HANDOVER_WAIT_STATUS_OK": "false", "HANDOVER_SWAP_ROLES": "true", "HANDOVER_LOG_LEVEL": "info"}
	if env := get(fn, "Environment", "Variables"); !reflect.DeepEqual(env, wantEnv) {
		t.Errorf("function environment %v, want %v", env, wantEnv)
	}
	if got, want := c.rolePolicyInMoto(role, "handover-failover"), iamPolicy(t, "--commands", "failover", "--group", standbyGroup); !reflect.DeepEqual(got, want) {
		g, _ := json.MarshalIndent(got, "", " ")
		t.Errorf("the function role's policy in moto is not handover iam-policy --commands failover:\n%s", g)
	}
	if n := len(listOf(get(c.ok("iam", "list-attached-role-policies", "--role-name", role), "AttachedPolicies"))); n != 0 {
		t.Errorf("moto now attaches %d managed policies: update motoGaps and check AWSLambdaBasicExecutionRole here", n)
	}

	rule := c.ok("events", "describe-rule", "--name", res["StateChangeRule"].physical)
	var pattern any
	if err := json.Unmarshal([]byte(str(rule, "EventPattern")), &pattern); err != nil {
		t.Fatal(err)
	}
	if ids := get(pattern, "detail", "instance-id"); !reflect.DeepEqual(ids, []any{primary, standby}) {
		t.Errorf("the rule watches %v, want [%s %s]", ids, primary, standby)
	}
	targets := c.ok("events", "list-targets-by-rule", "--rule", res["StateChangeRule"].physical)
	if str(targets, "Targets", 0, "Arn") != str(fn, "FunctionArn") {
		t.Errorf("rule targets %v, want the function", targets)
	}

	var policy any
	if err := json.Unmarshal([]byte(str(c.ok("lambda", "get-policy", "--function-name", fnName), "Policy")), &policy); err != nil {
		t.Fatal(err)
	}
	allowed := map[string]string{} // source ARN -> principal
	for _, st := range listOf(get(policy, "Statement")) {
		allowed[str(st, "Condition", "ArnLike", "AWS:SourceArn")] = str(st, "Principal", "Service")
	}
	want := map[string]string{
		"arn:aws:cloudwatch:us-east-1:123456789012:alarm:g3-primary-status-check": "lambda.alarms.cloudwatch.amazonaws.com",
		"arn:aws:cloudwatch:us-east-1:123456789012:alarm:g3-standby-status-check": "lambda.alarms.cloudwatch.amazonaws.com",
		str(rule, "Arn"): "events.amazonaws.com",
	}
	if !reflect.DeepEqual(allowed, want) {
		t.Errorf("the function may be invoked by %v, want %v", allowed, want)
	}
}

// TestMotoGapsAreListed: every template has its list (an empty one says moto models all of it).
func TestMotoGapsAreListed(t *testing.T) {
	t.Parallel()
	for _, name := range templates {
		if _, ok := motoGaps[name]; !ok {
			t.Errorf("%s: no motoGaps entry", name)
		}
	}
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	text := strings.Join(strings.Fields(string(readme)), " ")
	for name, gaps := range motoGaps {
		for _, g := range gaps {
			if !strings.Contains(text, name+":") || !strings.Contains(text, g.what) {
				t.Errorf("README.md (\"What moto does not model\") does not list the moto gap of %s: %q", name, g.what)
			}
		}
	}
}
