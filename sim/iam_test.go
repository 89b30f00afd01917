package sim

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	astypes "github.com/aws/aws-sdk-go-v2/service/autoscaling/types"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

func mustPolicy(t *testing.T, doc string) *Policy {
	t.Helper()
	p, err := ParsePolicy([]byte(doc))
	if err != nil {
		t.Fatalf("ParsePolicy: %v\n%s", err, doc)
	}
	return p
}

// policyOf is a policy of the given statements (JSON objects).
func policyOf(statements ...string) string {
	return `{"Version":"2012-10-17","Statement":[` + strings.Join(statements, ",") + `]}`
}

const (
	volARN  = "arn:aws:ec2:us-east-1:123456789012:volume/vol-1"
	instARN = "arn:aws:ec2:us-east-1:123456789012:instance/i-1"
	snapARN = "arn:aws:ec2:us-east-1::snapshot/snap-1"
)

func decisionName(d iamDecision) string {
	return map[iamDecision]string{allowed: "allowed", implicitDeny: "implicit deny", explicitDeny: "explicit deny"}[d]
}

// TestIAMEvaluation: the evaluation logic of one identity-based policy. Each case is a policy, a request
// and IAM's decision for it.
func TestIAMEvaluation(t *testing.T) {
	t.Parallel()
	allowAll := `{"Effect":"Allow","Action":"*","Resource":"*"}`
	groupA := iamContext{"aws:resourcetag/handover:group": {"a"}}
	for _, tc := range []struct {
		name     string
		policy   string
		action   string
		resource string
		ctx      iamContext
		want     iamDecision
	}{
		// Effect.
		{"no statement matches: implicit deny", policyOf(`{"Effect":"Allow","Action":"ec2:DescribeVolumes","Resource":"*"}`), "ec2:AttachVolume", volARN, nil, implicitDeny},
		{"allow", policyOf(allowAll), "ec2:AttachVolume", volARN, nil, allowed},
		{"deny beats allow", policyOf(allowAll, `{"Effect":"Deny","Action":"ec2:AttachVolume","Resource":"*"}`), "ec2:AttachVolume", volARN, nil, explicitDeny},
		{"deny beats allow, in either order", policyOf(`{"Effect":"Deny","Action":"ec2:*","Resource":"arn:aws:ec2:*:*:volume/*"}`, allowAll), "ec2:AttachVolume", volARN, nil, explicitDeny},
		{"a deny that does not match leaves the allow", policyOf(allowAll, `{"Effect":"Deny","Action":"ec2:DeleteVolume","Resource":"*"}`), "ec2:AttachVolume", volARN, nil, allowed},

		// Action: wildcards, case.
		{"action prefix wildcard", policyOf(`{"Effect":"Allow","Action":"ec2:Describe*","Resource":"*"}`), "ec2:DescribeVolumes", "*", nil, allowed},
		{"action wildcard in the middle", policyOf(`{"Effect":"Allow","Action":"ec2:*Volume","Resource":"*"}`), "ec2:AttachVolume", volARN, nil, allowed},
		{"action wildcard does not add a suffix", policyOf(`{"Effect":"Allow","Action":"ec2:*Volume","Resource":"*"}`), "ec2:DescribeVolumes", "*", nil, implicitDeny},
		{"action ? is one character", policyOf(`{"Effect":"Allow","Action":"ec2:?ttachVolume","Resource":"*"}`), "ec2:AttachVolume", volARN, nil, allowed},
		{"action names are not case-sensitive", policyOf(`{"Effect":"Allow","Action":"EC2:attachvolume","Resource":"*"}`), "ec2:AttachVolume", volARN, nil, allowed},
		{"another service's action", policyOf(`{"Effect":"Allow","Action":"autoscaling:*","Resource":"*"}`), "ec2:AttachVolume", volARN, nil, implicitDeny},
		{"action list", policyOf(`{"Effect":"Allow","Action":["ec2:DetachVolume","ec2:AttachVolume"],"Resource":"*"}`), "ec2:AttachVolume", volARN, nil, allowed},

		// Resource: ARNs field by field.
		{"resource type", policyOf(`{"Effect":"Allow","Action":"ec2:AttachVolume","Resource":"arn:aws:ec2:*:*:volume/*"}`), "ec2:AttachVolume", volARN, nil, allowed},
		{"another resource type", policyOf(`{"Effect":"Allow","Action":"ec2:AttachVolume","Resource":"arn:aws:ec2:*:*:volume/*"}`), "ec2:AttachVolume", instARN, nil, implicitDeny},
		{"an ARN pattern does not match an action without resource types", policyOf(`{"Effect":"Allow","Action":"ec2:DescribeVolumes","Resource":"arn:aws:ec2:*:*:volume/*"}`), "ec2:DescribeVolumes", "*", nil, implicitDeny},
		{"a snapshot ARN has no account", policyOf(`{"Effect":"Allow","Action":"ec2:DeleteSnapshot","Resource":"arn:aws:ec2:us-east-1::snapshot/*"}`), "ec2:DeleteSnapshot", snapARN, nil, allowed},
		{"* matches the empty account", policyOf(`{"Effect":"Allow","Action":"ec2:DeleteSnapshot","Resource":"arn:aws:ec2:*:*:snapshot/*"}`), "ec2:DeleteSnapshot", snapARN, nil, allowed},
		{"a wildcard does not cross fields", policyOf(`{"Effect":"Allow","Action":"ec2:AttachVolume","Resource":"arn:aws:ec2:*:volume/*"}`), "ec2:AttachVolume", volARN, nil, implicitDeny},
		{"another region", policyOf(`{"Effect":"Allow","Action":"ec2:AttachVolume","Resource":"arn:aws:ec2:eu-west-1:*:volume/*"}`), "ec2:AttachVolume", volARN, nil, implicitDeny},
		{"one volume by id", policyOf(`{"Effect":"Allow","Action":"ec2:AttachVolume","Resource":"` + volARN + `"}`), "ec2:AttachVolume", volARN, nil, allowed},
		{"Auto Scaling ARNs hold colons in the resource", policyOf(`{"Effect":"Allow","Action":"autoscaling:CompleteLifecycleAction","Resource":"arn:aws:autoscaling:*:*:autoScalingGroup:*:autoScalingGroupName/*"}`),
			"autoscaling:CompleteLifecycleAction", "arn:aws:autoscaling:us-east-1:123456789012:autoScalingGroup:0f1e:autoScalingGroupName/db", nil, allowed},

		// NotAction, NotResource.
		{"NotAction allows what it does not name", policyOf(`{"Effect":"Allow","NotAction":"ec2:DeleteVolume","Resource":"*"}`), "ec2:AttachVolume", volARN, nil, allowed},
		{"NotAction does not allow what it names", policyOf(`{"Effect":"Allow","NotAction":["ec2:Delete*"],"Resource":"*"}`), "ec2:DeleteVolume", volARN, nil, implicitDeny},
		{"NotResource allows other resources", policyOf(`{"Effect":"Allow","Action":"ec2:AttachVolume","NotResource":"arn:aws:ec2:*:*:instance/*"}`), "ec2:AttachVolume", volARN, nil, allowed},
		{"NotResource does not allow the resources it names", policyOf(`{"Effect":"Allow","Action":"ec2:AttachVolume","NotResource":"arn:aws:ec2:*:*:instance/*"}`), "ec2:AttachVolume", instARN, nil, implicitDeny},
		{"Deny with NotAction denies the rest", policyOf(allowAll, `{"Effect":"Deny","NotAction":"ec2:Describe*","Resource":"*"}`), "ec2:AttachVolume", volARN, nil, explicitDeny},

		// StringEquals, StringLike and their negations.
		{"StringEquals", policyOf(`{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"StringEquals":{"aws:ResourceTag/handover:group":"a"}}}`), "ec2:AttachVolume", volARN, groupA, allowed},
		{"StringEquals is case-sensitive", policyOf(`{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"StringEquals":{"aws:ResourceTag/handover:group":"A"}}}`), "ec2:AttachVolume", volARN, groupA, implicitDeny},
		{"StringEquals, another value", policyOf(`{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"StringEquals":{"aws:ResourceTag/handover:group":"b"}}}`), "ec2:AttachVolume", volARN, groupA, implicitDeny},
		{"StringEquals, the values of a key are ORed", policyOf(`{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"StringEquals":{"aws:ResourceTag/handover:group":["b","a"]}}}`), "ec2:AttachVolume", volARN, groupA, allowed},
		{"StringEquals, a missing key is false", policyOf(`{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"StringEquals":{"aws:ResourceTag/handover:group":"a"}}}`), "ec2:AttachVolume", volARN, nil, implicitDeny},
		{"StringEqualsIgnoreCase", policyOf(`{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"StringEqualsIgnoreCase":{"aws:ResourceTag/handover:group":"A"}}}`), "ec2:AttachVolume", volARN, groupA, allowed},
		{"StringNotEquals", policyOf(`{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"StringNotEquals":{"aws:ResourceTag/handover:group":"a"}}}`), "ec2:AttachVolume", volARN, groupA, implicitDeny},
		{"StringNotEquals, a missing key is true", policyOf(`{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"StringNotEquals":{"aws:ResourceTag/handover:group":"a"}}}`), "ec2:AttachVolume", volARN, nil, allowed},
		{"StringLike ?* wants a value", policyOf(`{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"StringLike":{"aws:ResourceTag/handover:group":"?*"}}}`), "ec2:AttachVolume", volARN, groupA, allowed},
		{"StringLike ?* refuses the empty value", policyOf(`{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"StringLike":{"aws:ResourceTag/handover:group":"?*"}}}`), "ec2:AttachVolume", volARN, iamContext{"aws:resourcetag/handover:group": {""}}, implicitDeny},
		{"StringLike ?* refuses a missing tag", policyOf(`{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"StringLike":{"aws:ResourceTag/handover:group":"?*"}}}`), "ec2:AttachVolume", volARN, nil, implicitDeny},
		{"StringLike wildcard", policyOf(`{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"StringLike":{"aws:ResourceTag/handover:group":"db-*"}}}`), "ec2:AttachVolume", volARN, iamContext{"aws:resourcetag/handover:group": {"db-orders"}}, allowed},
		{"StringNotLike", policyOf(`{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"StringNotLike":{"aws:ResourceTag/handover:group":"db-*"}}}`), "ec2:AttachVolume", volARN, iamContext{"aws:resourcetag/handover:group": {"db-orders"}}, implicitDeny},
		{"condition key names are not case-sensitive", policyOf(`{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"StringEquals":{"AWS:RESOURCETAG/handover:group":"a"}}}`), "ec2:AttachVolume", volARN, groupA, allowed},
		{"IfExists: a missing key is true", policyOf(`{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"StringEqualsIfExists":{"aws:ResourceTag/handover:group":"a"}}}`), "ec2:AttachVolume", volARN, nil, allowed},
		{"IfExists: a present key is compared", policyOf(`{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"StringEqualsIfExists":{"aws:ResourceTag/handover:group":"b"}}}`), "ec2:AttachVolume", volARN, groupA, implicitDeny},

		// Bool, Null.
		{"Bool", policyOf(`{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"Bool":{"kms:GrantIsForAWSResource":true}}}`), "kms:CreateGrant", "*", iamContext{"kms:grantisforawsresource": {"true"}}, allowed},
		{"Bool, false", policyOf(`{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"Bool":{"kms:GrantIsForAWSResource":"true"}}}`), "kms:CreateGrant", "*", iamContext{"kms:grantisforawsresource": {"false"}}, implicitDeny},
		{"Null true: the key is missing", policyOf(`{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"Null":{"aws:ResourceTag/handover:superseded":"true"}}}`), "ec2:DeleteVolume", volARN, groupA, allowed},
		{"Null true: the key is there", policyOf(`{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"Null":{"aws:ResourceTag/handover:superseded":"true"}}}`), "ec2:DeleteVolume", volARN, iamContext{"aws:resourcetag/handover:superseded": {"true"}}, implicitDeny},
		{"Null false: the key is there", policyOf(`{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"Null":{"aws:ResourceTag/handover:group":"false"}}}`), "ec2:DeleteVolume", volARN, groupA, allowed},
		{"Null false: the key is missing", policyOf(`{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"Null":{"aws:ResourceTag/handover:group":"false"}}}`), "ec2:DeleteVolume", volARN, nil, implicitDeny},

		// Several conditions: ANDed, across keys and across operators.
		{"two keys of one operator: both must hold", policyOf(`{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"StringEquals":{"aws:ResourceTag/handover:group":"a","ec2:CreateAction":"CreateVolume"}}}`),
			"ec2:CreateTags", volARN, groupA, implicitDeny},
		{"two operators: both must hold", policyOf(`{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"StringEquals":{"aws:ResourceTag/handover:group":"a"},"Null":{"aws:ResourceTag/handover:superseded":"true"}}}`),
			"ec2:DeleteVolume", volARN, iamContext{"aws:resourcetag/handover:group": {"a"}, "aws:resourcetag/handover:superseded": {"true"}}, implicitDeny},

		// Multivalued aws:TagKeys with the set operators.
		{"ForAllValues: every key is allowed", policyOf(`{"Effect":"Allow","Action":"ec2:CreateTags","Resource":"*","Condition":{"ForAllValues:StringEquals":{"aws:TagKeys":["handover:superseded","x"]}}}`),
			"ec2:CreateTags", volARN, iamContext{"aws:tagkeys": {"handover:superseded"}}, allowed},
		{"ForAllValues: one key more is refused", policyOf(`{"Effect":"Allow","Action":"ec2:CreateTags","Resource":"*","Condition":{"ForAllValues:StringEquals":{"aws:TagKeys":["handover:superseded"]}}}`),
			"ec2:CreateTags", volARN, iamContext{"aws:tagkeys": {"handover:superseded", "handover:group"}}, implicitDeny},
		{"ForAllValues: no keys at all is true", policyOf(`{"Effect":"Allow","Action":"ec2:CreateTags","Resource":"*","Condition":{"ForAllValues:StringEquals":{"aws:TagKeys":["handover:superseded"]}}}`),
			"ec2:CreateTags", volARN, nil, allowed},
		{"ForAllValues:StringLike", policyOf(`{"Effect":"Allow","Action":"ec2:CreateTags","Resource":"*","Condition":{"ForAllValues:StringLike":{"aws:TagKeys":["handover:*"]}}}`),
			"ec2:CreateTags", volARN, iamContext{"aws:tagkeys": {"handover:role", "handover:superseded"}}, allowed},
		{"ForAnyValue: one key matches", policyOf(`{"Effect":"Deny","Action":"ec2:CreateTags","Resource":"*","Condition":{"ForAnyValue:StringEquals":{"aws:TagKeys":["handover:group"]}}}`, allowAll),
			"ec2:CreateTags", volARN, iamContext{"aws:tagkeys": {"handover:role", "handover:group"}}, explicitDeny},
		{"ForAnyValue: none matches", policyOf(`{"Effect":"Deny","Action":"ec2:CreateTags","Resource":"*","Condition":{"ForAnyValue:StringEquals":{"aws:TagKeys":["handover:group"]}}}`, allowAll),
			"ec2:CreateTags", volARN, iamContext{"aws:tagkeys": {"handover:role"}}, allowed},
		{"ForAnyValue: no keys at all is false", policyOf(`{"Effect":"Deny","Action":"ec2:CreateTags","Resource":"*","Condition":{"ForAnyValue:StringEquals":{"aws:TagKeys":["handover:group"]}}}`, allowAll),
			"ec2:CreateTags", volARN, nil, allowed},
		{"ForAllValues:StringNotEquals", policyOf(`{"Effect":"Allow","Action":"ec2:CreateTags","Resource":"*","Condition":{"ForAllValues:StringNotEquals":{"aws:TagKeys":["handover:group"]}}}`),
			"ec2:CreateTags", volARN, iamContext{"aws:tagkeys": {"handover:role", "handover:group"}}, implicitDeny},
	} {
		if got := mustPolicy(t, tc.policy).decide(tc.action, tc.resource, tc.ctx); got != tc.want {
			t.Errorf("%s: %s on %s with %v: %s, want %s\n%s", tc.name, tc.action, tc.resource, tc.ctx, decisionName(got), decisionName(tc.want), tc.policy)
		}
	}
}

// TestIAMPolicyRefused: what the simulator cannot evaluate is refused when the policy is attached, with a
// message that names it, never evaluated wrongly.
func TestIAMPolicyRefused(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ doc, want string }{
		{`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":"*","Action":"*","Resource":"*"}]}`, "Principal"},
		{`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","NotPrincipal":{"AWS":"x"},"Action":"*","Resource":"*"}]}`, "NotPrincipal"},
		{`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"NumericLessThan":{"aws:MultiFactorAuthAge":"3600"}}}]}`, "NumericLessThan"},
		{`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"ForEach:StringEquals":{"aws:TagKeys":"x"}}}]}`, "ForEach"},
		{`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"StringEquals":{"aws:TagKeys":"x"}}}]}`, "multivalued"},
		{`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"ForAllValues:Null":{"aws:TagKeys":"true"}}}]}`, "Null takes no set operator"},
		{`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"arn:aws:ec2:*:*:volume/${aws:username}"}]}`, "policy variables"},
		{`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"StringEquals":{"aws:ResourceTag/o":"${aws:PrincipalTag/o}"}}}]}`, "policy variables"},
		{`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*"}]}`, "Resource"},
		{`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","NotAction":"ec2:*","Resource":"*"}]}`, "exactly one of Action and NotAction"},
		{`{"Version":"2012-10-17","Statement":[{"Effect":"allow","Action":"*","Resource":"*"}]}`, "Effect"},
		{`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*","Resources":"*"}]}`, "Resources"},
		{`{"Version":"2012-10-17","Statement":[]}`, "Statement"},
		{`{"Version":"2020-01-01","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}`, "Version"},
		{`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}],"Extra":1}`, "Extra"},
		{`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":[1],"Resource":"*"}]}`, "Action"},
	} {
		_, err := ParsePolicy([]byte(tc.doc))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParsePolicy(%s): %v, want an error naming %q", tc.doc, err, tc.want)
		}
	}
	// What IAM accepts in more than one form.
	for _, doc := range []string{
		`{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"ec2:*","Resource":"*"}}`,
		`{"Version":"2012-10-17","Id":"x","Statement":[{"Sid":"S","Effect":"Deny","NotAction":["ec2:*"],"NotResource":"*","Condition":{"Bool":{"aws:SecureTransport":false},"StringLikeIfExists":{"aws:ResourceTag/a":["x*"]}}}]}`,
	} {
		if _, err := ParsePolicy([]byte(doc)); err != nil {
			t.Errorf("ParsePolicy(%s): %v", doc, err)
		}
	}
}

func TestGlobMatch(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		pattern, s string
		want       bool
	}{
		{"*", "", true}, {"?", "", false}, {"?*", "a", true}, {"a*b*c", "axxbyyc", true}, {"a*b*c", "axxbyy", false},
		{"*Volume", "AttachVolume", true}, {"*Volume", "AttachVolumes", false}, {"a?c", "abc", true}, {"a?c", "ac", false},
		{"**", "x", true}, {"*a", "aaaa", true}, {"", "", true}, {"", "x", false},
	} {
		if got := globMatch(tc.pattern, tc.s); got != tc.want {
			t.Errorf("globMatch(%q, %q) = %v, want %v", tc.pattern, tc.s, got, tc.want)
		}
	}
}

// iamWorld is a region where one instance (the caller) has a policy, and the admin client builds the rest.
type iamWorld struct {
	r      *Region
	inst   string
	ec2    *ec2.Client // as the instance
	as     *autoscaling.Client
	admin  *ec2.Client
	aadmin *autoscaling.Client
}

func newIAMWorld(t *testing.T, tags map[string]string) *iamWorld {
	t.Helper()
	r := startRegion(t, Options{})
	w := &iamWorld{r: r, admin: ec2Client(r), aadmin: asgClient(r)}
	w.inst = runInstance(t, r, "us-east-1a", tags)
	key := instanceAccessKey(w.inst)
	w.ec2 = ec2.NewFromConfig(awsConfig(r, key), func(o *ec2.Options) { o.RetryMaxAttempts = 1 })
	w.as = autoscaling.NewFromConfig(awsConfig(r, key), func(o *autoscaling.Options) { o.RetryMaxAttempts = 1 })
	return w
}

func (w *iamWorld) attach(t *testing.T, statements ...string) {
	t.Helper()
	if err := w.r.SetInstancePolicy(w.inst, []byte(policyOf(statements...))); err != nil {
		t.Fatal(err)
	}
}

// wantDenied fails unless err is AWS's answer to a call the policy does not allow: code, HTTP 403, and a
// message naming the action and the resource.
func wantDenied(t *testing.T, err error, code, action, resource string) {
	t.Helper()
	var ae smithy.APIError
	if !errors.As(err, &ae) || ae.ErrorCode() != code {
		t.Fatalf("want %s, got %v", code, err)
	}
	var re *smithyhttp.ResponseError
	if !errors.As(err, &re) || re.HTTPStatusCode() != http.StatusForbidden {
		t.Errorf("%s: want HTTP 403, got %v", code, err)
	}
	msg := ae.ErrorMessage()
	want := fmt.Sprintf("is not authorized to perform: %s on resource: %s", action, resource)
	if !strings.Contains(msg, want) || !strings.Contains(msg, "User: arn:aws:sts::123456789012:assumed-role/") {
		t.Errorf("message %q lacks %q", msg, want)
	}
	if code == "UnauthorizedOperation" && !strings.HasPrefix(msg, "You are not authorized to perform this operation.") {
		t.Errorf("EC2's message starts with 'You are not authorized to perform this operation.': %q", msg)
	}
}

// TestIAMEnforcedByTheAPI: a policy on an instance's role authorizes its calls through the API: the
// resources of each action, their tags, the tags of the request, ec2:CreateAction; denied calls answer
// AWS's code, status and message and are in the call log; other callers are not checked; detaching the
// policy ends it.
func TestIAMEnforcedByTheAPI(t *testing.T) {
	t.Parallel()
	group := map[string]string{"handover:group": "a"}
	w := newIAMWorld(t, group)
	ctx := ctxT(t)
	vol := createVolume(t, w.r, "us-east-1a", 1, group)
	other := createVolume(t, w.r, "us-east-1a", 1, map[string]string{"handover:group": "b"})
	idle(t, w.r)

	// No policy: nothing is checked.
	if _, err := w.ec2.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{}); err != nil {
		t.Fatalf("without a policy: %v", err)
	}

	describe := `{"Effect":"Allow","Action":"ec2:Describe*","Resource":"*"}`
	volumes := `{"Effect":"Allow","Action":["ec2:AttachVolume","ec2:DetachVolume"],"Resource":"arn:aws:ec2:*:*:volume/*","Condition":{"StringEquals":{"aws:ResourceTag/handover:group":"a"}}}`
	w.attach(t, describe, volumes)
	if _, err := w.ec2.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{}); err != nil {
		t.Fatalf("Describe* on *: %v", err)
	}
	// AttachVolume is authorized against the instance too.
	attach := &ec2.AttachVolumeInput{VolumeId: aws.String(vol), InstanceId: aws.String(w.inst), Device: aws.String("/dev/sdf")}
	_, err := w.ec2.AttachVolume(ctx, attach)
	wantDenied(t, err, "UnauthorizedOperation", "ec2:AttachVolume", "arn:aws:ec2:us-east-1:123456789012:instance/"+w.inst)
	if !strings.Contains(err.Error(), "because no identity-based policy allows the ec2:AttachVolume action") {
		t.Errorf("implicit deny: %v", err)
	}
	instances := `{"Effect":"Allow","Action":["ec2:AttachVolume","ec2:DetachVolume"],"Resource":"arn:aws:ec2:*:*:instance/*","Condition":{"StringEquals":{"aws:ResourceTag/handover:group":"a"}}}`
	w.attach(t, describe, volumes, instances)
	// Another group's volume: the volume's tag decides.
	_, err = w.ec2.AttachVolume(ctx, &ec2.AttachVolumeInput{VolumeId: aws.String(other), InstanceId: aws.String(w.inst), Device: aws.String("/dev/sdg")})
	wantDenied(t, err, "UnauthorizedOperation", "ec2:AttachVolume", "arn:aws:ec2:us-east-1:123456789012:volume/"+other)
	// DryRun: the authorization first.
	_, err = w.ec2.AttachVolume(ctx, &ec2.AttachVolumeInput{VolumeId: aws.String(other), InstanceId: aws.String(w.inst), Device: aws.String("/dev/sdg"), DryRun: aws.Bool(true)})
	wantCode(t, err, "UnauthorizedOperation")
	_, err = w.ec2.AttachVolume(ctx, &ec2.AttachVolumeInput{VolumeId: aws.String(vol), InstanceId: aws.String(w.inst), Device: aws.String("/dev/sdf"), DryRun: aws.Bool(true)})
	wantCode(t, err, "DryRunOperation")
	if _, err := w.ec2.AttachVolume(ctx, attach); err != nil {
		t.Fatalf("AttachVolume with both statements: %v", err)
	}
	// The admin client has no policy.
	if _, err := w.admin.DeleteVolume(ctx, &ec2.DeleteVolumeInput{VolumeId: aws.String(other)}); err != nil {
		t.Errorf("a caller without a policy is refused: %v", err)
	}
	// An explicit deny wins over the allow.
	w.attach(t, describe, volumes, instances, `{"Effect":"Deny","Action":"ec2:DetachVolume","Resource":"*"}`)
	_, err = w.ec2.DetachVolume(ctx, &ec2.DetachVolumeInput{VolumeId: aws.String(vol)})
	wantDenied(t, err, "UnauthorizedOperation", "ec2:DetachVolume", "arn:aws:ec2:us-east-1:123456789012:instance/"+w.inst)
	if !strings.Contains(err.Error(), "with an explicit deny in an identity-based policy") {
		t.Errorf("explicit deny: %v", err)
	}
	// The call log has the refusals.
	denied := 0
	for _, c := range w.r.Calls() {
		if c.Caller == instanceAccessKey(w.inst) && c.Code == "UnauthorizedOperation" {
			denied++
		}
	}
	if denied != 4 {
		t.Errorf("call log: %d UnauthorizedOperation calls of the instance, want 4", denied)
	}
	// Detached: allowed again.
	if err := w.r.SetInstancePolicy(w.inst, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := w.ec2.DetachVolume(ctx, &ec2.DetachVolumeInput{VolumeId: aws.String(vol)}); err != nil {
		t.Errorf("after the policy is detached: %v", err)
	}
	if err := w.r.SetInstancePolicy("i-0123456789abcdef0", []byte(policyOf(describe))); err == nil {
		t.Error("a policy for an instance that does not exist was accepted")
	}
	if err := w.r.SetInstancePolicy(w.inst, []byte(`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":"*","Action":"*","Resource":"*"}]}`)); err == nil {
		t.Error("a policy with a Principal was accepted")
	}
}

// TestIAMCreateWithTags: CreateVolume and CreateSnapshot are authorized against what they create (the
// request's tags) and what they use (the snapshot, the volume: its tags), and their TagSpecifications as
// ec2:CreateTags with ec2:CreateAction; CreateTags of an existing resource is not a creation.
func TestIAMCreateWithTags(t *testing.T) {
	t.Parallel()
	group := map[string]string{"handover:group": "a"}
	w := newIAMWorld(t, group)
	ctx := ctxT(t)
	vol := createVolume(t, w.r, "us-east-1a", 1, group)
	idle(t, w.r)
	spec := func(rt ec2types.ResourceType, g string) []ec2types.TagSpecification {
		return []ec2types.TagSpecification{{ResourceType: rt, Tags: []ec2types.Tag{{Key: aws.String("handover:group"), Value: aws.String(g)}}}}
	}
	createSnapshots := `{"Effect":"Allow","Action":"ec2:CreateSnapshot","Resource":"arn:aws:ec2:*::snapshot/*","Condition":{"StringEquals":{"aws:RequestTag/handover:group":"a"}}}`
	ofVolumes := `{"Effect":"Allow","Action":["ec2:CreateSnapshot"],"Resource":"arn:aws:ec2:*:*:volume/*","Condition":{"StringEquals":{"aws:ResourceTag/handover:group":"a"}}}`
	tagAtCreation := `{"Effect":"Allow","Action":"ec2:CreateTags","Resource":"arn:aws:ec2:*::snapshot/*","Condition":{"StringEquals":{"ec2:CreateAction":"CreateSnapshot"}}}`

	snap := func(g string) error {
		_, err := w.ec2.CreateSnapshot(ctx, &ec2.CreateSnapshotInput{VolumeId: aws.String(vol), TagSpecifications: spec(ec2types.ResourceTypeSnapshot, g)})
		return err
	}
	w.attach(t, createSnapshots, ofVolumes)
	wantDenied(t, snap("a"), "UnauthorizedOperation", "ec2:CreateTags", "arn:aws:ec2:us-east-1::snapshot/*")
	w.attach(t, createSnapshots, tagAtCreation)
	wantDenied(t, snap("a"), "UnauthorizedOperation", "ec2:CreateSnapshot", "arn:aws:ec2:us-east-1:123456789012:volume/"+vol)
	w.attach(t, createSnapshots, ofVolumes, tagAtCreation)
	wantDenied(t, snap("b"), "UnauthorizedOperation", "ec2:CreateSnapshot", "arn:aws:ec2:us-east-1::snapshot/*")
	if err := snap("a"); err != nil {
		t.Fatalf("CreateSnapshot with every statement: %v", err)
	}
	// ec2:CreateAction is only there at creation: the same statement does not let CreateTags tag a snapshot.
	snaps, err := w.admin.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{OwnerIds: []string{"self"}})
	if err != nil || len(snaps.Snapshots) != 1 {
		t.Fatalf("DescribeSnapshots: %v", err)
	}
	sid := aws.ToString(snaps.Snapshots[0].SnapshotId)
	_, err = w.ec2.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{sid}, Tags: []ec2types.Tag{{Key: aws.String("x"), Value: aws.String("y")}}})
	wantDenied(t, err, "UnauthorizedOperation", "ec2:CreateTags", "arn:aws:ec2:us-east-1::snapshot/"+sid)
	idle(t, w.r)

	// CreateVolume from the snapshot: the snapshot's tags, then the request's.
	restore := func(g string) error {
		_, err := w.ec2.CreateVolume(ctx, &ec2.CreateVolumeInput{AvailabilityZone: aws.String("us-east-1a"), SnapshotId: aws.String(sid),
			TagSpecifications: spec(ec2types.ResourceTypeVolume, g)})
		return err
	}
	createVolumes := `{"Effect":"Allow","Action":"ec2:CreateVolume","Resource":"arn:aws:ec2:*:*:volume/*","Condition":{"StringEquals":{"aws:RequestTag/handover:group":"a"}}}`
	tagVolumes := `{"Effect":"Allow","Action":"ec2:CreateTags","Resource":"arn:aws:ec2:*:*:volume/*","Condition":{"StringEquals":{"ec2:CreateAction":"CreateVolume","aws:RequestTag/handover:group":"a"}}}`
	fromSnapshots := `{"Effect":"Allow","Action":"ec2:CreateVolume","Resource":"arn:aws:ec2:*::snapshot/*","Condition":{"StringEquals":{"aws:ResourceTag/handover:group":"b"}}}`
	w.attach(t, createVolumes, tagVolumes, fromSnapshots)
	wantDenied(t, restore("a"), "UnauthorizedOperation", "ec2:CreateVolume", "arn:aws:ec2:us-east-1::snapshot/"+sid)
	w.attach(t, createVolumes, tagVolumes, strings.Replace(fromSnapshots, `"b"`, `"a"`, 1))
	wantDenied(t, restore("b"), "UnauthorizedOperation", "ec2:CreateVolume", "arn:aws:ec2:us-east-1:123456789012:volume/*")
	if err := restore("a"); err != nil {
		t.Fatalf("CreateVolume from the group's snapshot: %v", err)
	}

	// The tags of the request on an existing resource: aws:TagKeys with ForAllValues.
	w.attach(t, `{"Effect":"Allow","Action":"ec2:CreateTags","Resource":"arn:aws:ec2:*:*:volume/*","Condition":{"StringEquals":{"aws:ResourceTag/handover:group":"a","aws:RequestTag/handover:superseded":"true"},"ForAllValues:StringEquals":{"aws:TagKeys":["handover:superseded"]}}}`)
	tag := func(kv ...string) error {
		var tags []ec2types.Tag
		for i := 0; i < len(kv); i += 2 {
			tags = append(tags, ec2types.Tag{Key: aws.String(kv[i]), Value: aws.String(kv[i+1])})
		}
		_, err := w.ec2.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{vol}, Tags: tags})
		return err
	}
	wantDenied(t, tag("handover:superseded", "true", "handover:group", "b"), "UnauthorizedOperation", "ec2:CreateTags", "arn:aws:ec2:us-east-1:123456789012:volume/"+vol)
	wantDenied(t, tag("handover:superseded", "false"), "UnauthorizedOperation", "ec2:CreateTags", "arn:aws:ec2:us-east-1:123456789012:volume/"+vol)
	if err := tag("handover:superseded", "true"); err != nil {
		t.Errorf("the one allowed tag: %v", err)
	}
	_, err = w.ec2.DeleteTags(ctx, &ec2.DeleteTagsInput{Resources: []string{vol}, Tags: []ec2types.Tag{{Key: aws.String("handover:group")}}})
	wantDenied(t, err, "UnauthorizedOperation", "ec2:DeleteTags", "arn:aws:ec2:us-east-1:123456789012:volume/"+vol)
}

// TestIAMAddressesAndGroups: AssociateAddress is authorized against the address, the instance and its
// network interface; Auto Scaling's lifecycle calls against the group (its tags), answering AccessDenied.
func TestIAMAddressesAndGroups(t *testing.T) {
	t.Parallel()
	group := map[string]string{"handover:group": "a"}
	w := newIAMWorld(t, group)
	ctx := ctxT(t)
	alloc, err := w.admin.AllocateAddress(ctx, &ec2.AllocateAddressInput{Domain: ec2types.DomainTypeVpc,
		TagSpecifications: []ec2types.TagSpecification{{ResourceType: ec2types.ResourceTypeElasticIp, Tags: toTags(group)}}})
	if err != nil {
		t.Fatal(err)
	}
	idle(t, w.r)
	addr := `{"Effect":"Allow","Action":["ec2:AssociateAddress","ec2:DisassociateAddress"],"Resource":["arn:aws:ec2:*:*:elastic-ip/*","arn:aws:ec2:*:*:instance/*"],"Condition":{"StringEquals":{"aws:ResourceTag/handover:group":"a"}}}`
	nic := `{"Effect":"Allow","Action":["ec2:AssociateAddress","ec2:DisassociateAddress"],"Resource":"arn:aws:ec2:*:*:network-interface/*"}`
	w.attach(t, addr)
	assoc := &ec2.AssociateAddressInput{AllocationId: alloc.AllocationId, InstanceId: aws.String(w.inst)}
	_, err = w.ec2.AssociateAddress(ctx, assoc)
	var ae smithy.APIError
	if !errors.As(err, &ae) || !strings.Contains(ae.ErrorMessage(), ":network-interface/eni-") {
		t.Fatalf("AssociateAddress without the interface statement: %v, want a refusal on the instance's network interface", err)
	}
	w.attach(t, addr, nic)
	out, err := w.ec2.AssociateAddress(ctx, assoc)
	if err != nil {
		t.Fatalf("AssociateAddress: %v", err)
	}
	w.attach(t, strings.Replace(addr, `"a"`, `"b"`, 1), nic)
	_, err = w.ec2.DisassociateAddress(ctx, &ec2.DisassociateAddressInput{AssociationId: out.AssociationId})
	wantDenied(t, err, "UnauthorizedOperation", "ec2:DisassociateAddress", "arn:aws:ec2:us-east-1:123456789012:elastic-ip/"+aws.ToString(alloc.AllocationId))
	// An association that is gone answers its NotFound code, as without a policy.
	_, err = w.ec2.DisassociateAddress(ctx, &ec2.DisassociateAddressInput{AssociationId: aws.String("eipassoc-0123456789abcdef0")})
	wantCode(t, err, "InvalidAssociationID.NotFound")

	// Auto Scaling: the group's tags.
	if _, err := w.admin.CreateLaunchTemplate(ctx, &ec2.CreateLaunchTemplateInput{LaunchTemplateName: aws.String("lt"),
		LaunchTemplateData: &ec2types.RequestLaunchTemplateData{ImageId: aws.String("ami-12345678"), InstanceType: ec2types.InstanceTypeT3Micro}}); err != nil {
		t.Fatal(err)
	}
	for name, g := range map[string]string{"asg-a": "a", "asg-b": "b"} {
		if _, err := w.aadmin.CreateAutoScalingGroup(ctx, &autoscaling.CreateAutoScalingGroupInput{AutoScalingGroupName: aws.String(name),
			LaunchTemplate: &astypes.LaunchTemplateSpecification{LaunchTemplateName: aws.String("lt")},
			MinSize:        aws.Int32(0), MaxSize: aws.Int32(1), DesiredCapacity: aws.Int32(0), AvailabilityZones: []string{"us-east-1a"},
			Tags: []astypes.Tag{{Key: aws.String("handover:group"), Value: aws.String(g)}}}); err != nil {
			t.Fatal(err)
		}
	}
	w.attach(t, `{"Effect":"Allow","Action":"autoscaling:RecordLifecycleActionHeartbeat","Resource":"arn:aws:autoscaling:*:*:autoScalingGroup:*:autoScalingGroupName/*","Condition":{"StringEquals":{"aws:ResourceTag/handover:group":"a"}}}`)
	beat := func(name string) error {
		_, err := w.as.RecordLifecycleActionHeartbeat(ctx, &autoscaling.RecordLifecycleActionHeartbeatInput{AutoScalingGroupName: aws.String(name),
			LifecycleHookName: aws.String("launch"), InstanceId: aws.String(w.inst)})
		return err
	}
	err = beat("asg-b")
	if !errors.As(err, &ae) || ae.ErrorCode() != "AccessDenied" {
		t.Fatalf("heartbeat of another group's hook: %v, want AccessDenied", err)
	}
	wantDenied(t, err, "AccessDenied", "autoscaling:RecordLifecycleActionHeartbeat", "arn:aws:autoscaling:us-east-1:123456789012:autoScalingGroup:")
	// Allowed: it reaches the group, which has no lifecycle action for the instance.
	wantCode(t, beat("asg-a"), "ValidationError")
	_, err = w.as.DescribeAutoScalingGroups(ctx, &autoscaling.DescribeAutoScalingGroupsInput{})
	wantDenied(t, err, "AccessDenied", "autoscaling:DescribeAutoScalingGroups", "*")
}

// TestIAMPolicyAdminPath: the admin path attaches and detaches a policy, and refuses a bad one with its
// reason.
func TestIAMPolicyAdminPath(t *testing.T) {
	t.Parallel()
	w := newIAMWorld(t, nil)
	post := func(body string) (int, string) {
		resp, err := http.Post(w.r.Endpoint()+"/sim/iam-policy?instance="+w.inst, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var b bytes.Buffer
		_, _ = b.ReadFrom(resp.Body)
		return resp.StatusCode, b.String()
	}
	if code, body := post(policyOf(`{"Effect":"Allow","Action":"ec2:DescribeVolumes","Resource":"*"}`)); code != http.StatusOK {
		t.Fatalf("attach: %d %s", code, body)
	}
	_, err := w.ec2.DescribeInstances(ctxT(t), &ec2.DescribeInstancesInput{})
	wantCode(t, err, "UnauthorizedOperation")
	if code, body := post(`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"DateLessThan":{"aws:CurrentTime":"2030-01-01"}}}]}`); code != http.StatusBadRequest || !strings.Contains(body, "DateLessThan") {
		t.Errorf("a policy with an operator the simulator does not evaluate: %d %s", code, body)
	}
	if code, body := post(""); code != http.StatusOK {
		t.Fatalf("detach: %d %s", code, body)
	}
	if _, err := w.ec2.DescribeInstances(ctxT(t), &ec2.DescribeInstancesInput{}); err != nil {
		t.Errorf("after detaching: %v", err)
	}
}

// TestIAMDeniedThroughTheCLI: the AWS CLI reads the simulator's refusals as AWS's: it prints the code and
// the message of EC2's UnauthorizedOperation and of Auto Scaling's AccessDenied.
func TestIAMDeniedThroughTheCLI(t *testing.T) {
	t.Parallel()
	w := newIAMWorld(t, nil)
	vol := createVolume(t, w.r, "us-east-1a", 1, nil)
	idle(t, w.r)
	w.attach(t, `{"Effect":"Allow","Action":"ec2:Describe*","Resource":"*"}`)
	cli := newAWSCLI(t, w.r.Endpoint())
	cli.env = append(cli.env, "AWS_ACCESS_KEY_ID="+instanceAccessKey(w.inst))
	cli.ok("ec2", "describe-volumes", "--volume-ids", vol)
	_, stderr, code := cli.run("ec2", "attach-volume", "--volume-id", vol, "--instance-id", w.inst, "--device", "/dev/sdf")
	want := "An error occurred (UnauthorizedOperation) when calling the AttachVolume operation: You are not authorized to perform this operation. User: arn:aws:sts::123456789012:assumed-role/" +
		instanceRole + "/" + w.inst + " is not authorized to perform: ec2:AttachVolume on resource: arn:aws:ec2:us-east-1:123456789012:instance/" + w.inst
	if (code != 254 && code != 255) || !strings.Contains(stderr, want) {
		t.Errorf("aws ec2 attach-volume: exit %d, stderr:\n%s\nwant it to contain:\n%s", code, stderr, want)
	}
	_, stderr, code = cli.run("autoscaling", "describe-auto-scaling-groups")
	want = "An error occurred (AccessDenied) when calling the DescribeAutoScalingGroups operation: User: arn:aws:sts::123456789012:assumed-role/" +
		instanceRole + "/" + w.inst + " is not authorized to perform: autoscaling:DescribeAutoScalingGroups on resource: *"
	if (code != 254 && code != 255) || !strings.Contains(stderr, want) {
		t.Errorf("aws autoscaling describe-auto-scaling-groups: exit %d, stderr:\n%s\nwant it to contain:\n%s", code, stderr, want)
	}
}
