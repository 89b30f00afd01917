package cloudformation

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/handover/handover/agent"
	"github.com/handover/handover/cloud"
)

// templates are the templates of this directory; a new one must be added here (TestEveryTemplateIsTested).
var templates = []string{"asg-singleton.yaml", "standby-failover.yaml"}

// The scope the policies are rendered for: the template's Fn::Sub with these values must give what
// `handover iam-policy --group g1 --region us-east-1 --account 123456789012 --partition aws` prints.
const (
	testGroup     = "g1"
	testRegion    = "us-east-1"
	testAccount   = "123456789012"
	testPartition = "aws"
	testKMSKey    = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
)

// policyCase is one role of a template under one set of parameters, and the iam-policy arguments whose
// output its policies must add up to.
type policyCase struct {
	template, role string
	params         map[string]string // beyond GroupName and the pseudo parameters
	args           []string
}

// policyCases: the instance role serves the units (up, watch and so down, snapshot with --keep) and an
// operator's status; with a customer-managed key, the key's grants. The function's role is failover's.
// TestPolicyOptionsMatchTheInstanceSettings checks the options against the instance's tags.
var policyCases = []policyCase{
	{"asg-singleton.yaml", "InstanceRole", map[string]string{"KmsKeyArn": ""}, []string{"--commands", "up,down,watch,snapshot,status", "--keep", "24"}},
	{"asg-singleton.yaml", "InstanceRole", map[string]string{"KmsKeyArn": testKMSKey}, []string{"--commands", "up,down,watch,snapshot,status", "--keep", "24", "--kms-key", testKMSKey}},
	{"standby-failover.yaml", "FunctionRole", nil, []string{"--commands", "failover"}},
}

// ---- reading templates

// template is a parsed template: plain Go values (map[string]any, []any, string, int, bool) with each
// short-form tag turned into its long form ({"Ref": x}, {"Fn::Sub": x}, ...), as CloudFormation reads it.
type template map[string]any

func readTemplate(t testing.TB, name string) template {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	v, err := fromNode(&doc)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	m, ok := v.(map[string]any)
	if !ok {
		t.Fatalf("%s: not a mapping", name)
	}
	return template(m)
}

// fromNode converts a YAML node. The short forms are those of
// https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/intrinsic-function-reference.html
func fromNode(n *yaml.Node) (any, error) {
	var v any
	switch n.Kind {
	case yaml.DocumentNode:
		return fromNode(n.Content[0])
	case yaml.AliasNode:
		return fromNode(n.Alias)
	case yaml.MappingNode:
		m := map[string]any{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i]
			if k.Tag != "!!str" {
				return nil, fmt.Errorf("line %d: key %q is a %s, not a string (quote it)", k.Line, k.Value, k.Tag)
			}
			x, err := fromNode(n.Content[i+1])
			if err != nil {
				return nil, err
			}
			m[k.Value] = x
		}
		v = m
	case yaml.SequenceNode:
		l := []any{}
		for _, c := range n.Content {
			x, err := fromNode(c)
			if err != nil {
				return nil, err
			}
			l = append(l, x)
		}
		v = l
	case yaml.ScalarNode:
		switch n.ShortTag() {
		case "!!int":
			i, err := strconv.Atoi(n.Value)
			if err != nil {
				return nil, fmt.Errorf("line %d: %v", n.Line, err)
			}
			v = i
		case "!!bool":
			v = n.Value == "true"
		case "!!null":
			v = nil
		default:
			v = n.Value
		}
	}
	tag := n.Tag
	if !strings.HasPrefix(tag, "!") || strings.HasPrefix(tag, "!!") {
		return v, nil
	}
	switch tag {
	case "!Ref":
		return map[string]any{"Ref": v}, nil
	case "!Condition":
		return map[string]any{"Condition": v}, nil
	case "!GetAtt":
		if s, ok := v.(string); ok {
			res, attr, _ := strings.Cut(s, ".")
			v = []any{res, attr}
		}
		return map[string]any{"Fn::GetAtt": v}, nil
	}
	return map[string]any{"Fn::" + tag[1:]: v}, nil
}

func (tp template) resources() map[string]map[string]any {
	out := map[string]map[string]any{}
	for k, v := range tp["Resources"].(map[string]any) {
		out[k] = v.(map[string]any)
	}
	return out
}

func (tp template) resource(t testing.TB, id string) map[string]any {
	t.Helper()
	r, ok := tp.resources()[id]
	if !ok {
		t.Fatalf("no resource %s", id)
	}
	return r
}

func props(r map[string]any) map[string]any {
	p, _ := r["Properties"].(map[string]any)
	return p
}

// ---- evaluating the parts of a template that matter here

// scope is the parameter values (and pseudo parameters) a template is evaluated with.
type scope struct {
	params map[string]string
	conds  map[string]any // the template's Conditions
}

func newScope(tp template, params map[string]string) scope {
	s := scope{params: map[string]string{
		"GroupName": testGroup, "AWS::Region": testRegion, "AWS::AccountId": testAccount, "AWS::Partition": testPartition,
	}}
	for k, v := range defaults(tp) {
		s.params[k] = v
	}
	for k, v := range params {
		s.params[k] = v
	}
	s.conds, _ = tp["Conditions"].(map[string]any)
	return s
}

// defaults are the parameters' Default values.
func defaults(tp template) map[string]string {
	out := map[string]string{}
	ps, _ := tp["Parameters"].(map[string]any)
	for name, p := range ps {
		if d, ok := p.(map[string]any)["Default"]; ok {
			out[name] = fmt.Sprint(d)
		}
	}
	return out
}

var subVarRE = regexp.MustCompile(`\$\{(!?)([A-Za-z0-9:]+)\}`)

// render evaluates Ref, Fn::Sub, Fn::If, Fn::Not, Fn::Equals and Condition to plain values; anything else
// is an error (a policy must not hold what the test cannot check).
func (s scope) render(v any) (any, error) {
	switch x := v.(type) {
	case map[string]any:
		if len(x) == 1 {
			for k, arg := range x {
				switch k {
				case "Ref":
					name, _ := arg.(string)
					val, ok := s.params[name]
					if !ok {
						return nil, fmt.Errorf("Ref %v: not a parameter this test gives a value", arg)
					}
					return val, nil
				case "Fn::Sub":
					str, ok := arg.(string)
					if !ok {
						return nil, fmt.Errorf("Fn::Sub with a variable map: not used by the templates")
					}
					var err error
					out := subVarRE.ReplaceAllStringFunc(str, func(m string) string {
						g := subVarRE.FindStringSubmatch(m)
						if g[1] == "!" {
							return "${" + g[2] + "}" // ${!x} is the literal ${x}
						}
						val, ok := s.params[g[2]]
						if !ok {
							err = fmt.Errorf("Fn::Sub %q: ${%s} is not a parameter this test gives a value", str, g[2])
						}
						return val
					})
					return out, err
				case "Fn::If":
					l, _ := arg.([]any)
					if len(l) != 3 {
						return nil, fmt.Errorf("Fn::If %v", arg)
					}
					c, err := s.condition(l[0].(string))
					if err != nil {
						return nil, err
					}
					if c {
						return s.render(l[1])
					}
					return s.render(l[2])
				}
				if strings.HasPrefix(k, "Fn::") {
					return nil, fmt.Errorf("%s is not evaluated by this test", k)
				}
			}
		}
		out := map[string]any{}
		for k, e := range x {
			r, err := s.render(e)
			if err != nil {
				return nil, err
			}
			out[k] = r
		}
		return out, nil
	case []any:
		out := []any{}
		for _, e := range x {
			r, err := s.render(e)
			if err != nil {
				return nil, err
			}
			out = append(out, r)
		}
		return out, nil
	}
	return v, nil
}

func (s scope) condition(name string) (bool, error) {
	c, ok := s.conds[name]
	if !ok {
		return false, fmt.Errorf("no condition %s", name)
	}
	return s.evalCondition(c)
}

func (s scope) evalCondition(c any) (bool, error) {
	m, ok := c.(map[string]any)
	if !ok || len(m) != 1 {
		return false, fmt.Errorf("condition %v", c)
	}
	for k, arg := range m {
		switch k {
		case "Condition":
			return s.condition(arg.(string))
		case "Fn::Not":
			b, err := s.evalCondition(arg.([]any)[0])
			return !b, err
		case "Fn::Equals":
			l := arg.([]any)
			a, err := s.render(l[0])
			if err != nil {
				return false, err
			}
			b, err := s.render(l[1])
			return fmt.Sprint(a) == fmt.Sprint(b), err
		}
	}
	return false, fmt.Errorf("condition function %v is not evaluated by this test", c)
}

// ---- the CLI's own view: its commands, their flags and defaults

type cliFlag struct{ name, def string }

// cli is what `handover help` and `handover COMMAND --help` say.
type cli struct {
	commands map[string][]cliFlag
}

var (
	helpCommandRE = regexp.MustCompile(`^  ([a-z][a-z-]*) +\S`)
	helpFlagRE    = regexp.MustCompile(`^  -([a-z][a-z0-9-]*)(?: \S+)?$`)
	helpDefaultRE = regexp.MustCompile(`\(default (.+)\)$`)
)

func runCLI(args ...string) (string, string, int) {
	var stdout, stderr bytes.Buffer
	env := agent.Env{Getenv: func(string) string { return "" }, Stdout: &stdout, Stderr: &stderr}
	code := agent.Main(context.Background(), args, env)
	return stdout.String(), stderr.String(), code
}

func readCLI(t testing.TB) cli {
	t.Helper()
	out, errOut, code := runCLI("help")
	if code != 0 {
		t.Fatalf("handover help: exit %d: %s", code, errOut)
	}
	c := cli{commands: map[string][]cliFlag{}}
	in := false
	for _, line := range strings.Split(errOut+out, "\n") {
		switch {
		case line == "commands:":
			in = true
		case line == "":
			in = false
		case in && helpCommandRE.MatchString(line):
			c.commands[helpCommandRE.FindStringSubmatch(line)[1]] = nil
		}
	}
	if len(c.commands) < 5 {
		t.Fatalf("handover help lists %d commands:\n%s", len(c.commands), errOut+out)
	}
	for name := range c.commands {
		out, errOut, code := runCLI(name, "--help")
		if code != 0 {
			continue // version takes no flags
		}
		var flags []cliFlag
		for _, line := range strings.Split(errOut+out, "\n") {
			if m := helpFlagRE.FindStringSubmatch(line); m != nil {
				flags = append(flags, cliFlag{name: m[1]})
			} else if d := helpDefaultRE.FindStringSubmatch(strings.TrimSpace(line)); d != nil && len(flags) > 0 && strings.HasPrefix(line, "    \t") {
				flags[len(flags)-1].def = strings.Trim(d[1], `"`)
			}
		}
		if len(flags) == 0 {
			t.Fatalf("handover %s --help lists no flags:\n%s", name, errOut+out)
		}
		c.commands[name] = flags
	}
	return c
}

func (c cli) hasFlag(command, flag string) bool {
	for _, f := range c.commands[command] {
		if f.name == flag {
			return true
		}
	}
	return false
}

// anyFlag reports whether some command has the flag.
func (c cli) anyFlag(flag string) bool {
	for cmd := range c.commands {
		if c.hasFlag(cmd, flag) {
			return true
		}
	}
	return false
}

func (c cli) defaultDuration(t testing.TB, command, flag string) time.Duration {
	t.Helper()
	for _, f := range c.commands[command] {
		if f.name == flag {
			d, err := time.ParseDuration(f.def)
			if err != nil {
				t.Fatalf("handover %s --%s: default %q is not a duration", command, flag, f.def)
			}
			return d
		}
	}
	t.Fatalf("handover %s has no --%s", command, flag)
	return 0
}

// ---- the tests

func TestEveryTemplateIsTested(t *testing.T) {
	t.Parallel()
	files, _ := filepath.Glob("*.yaml")
	sort.Strings(files)
	want := append([]string(nil), templates...)
	sort.Strings(want)
	if !reflect.DeepEqual(files, want) {
		t.Errorf("templates here %v, tested %v: add the new one to templates (and its roles to policyCases)", files, want)
	}
}

// TestTemplatePoliciesAreWhatIAMPolicyPrints: each role's policies (its own Policies, then the
// AWS::IAM::Policy resources attached to it whose condition holds), rendered for g1 in us-east-1 of
// account 123456789012, are exactly the document `handover iam-policy` prints for that scope and the
// role's commands and options: no action more, none less, the same conditions, in the same order.
func TestTemplatePoliciesAreWhatIAMPolicyPrints(t *testing.T) {
	t.Parallel()
	covered := map[string]bool{}
	for _, pc := range policyCases {
		t.Run(pc.template+"/"+pc.role+"/"+strings.Join(pc.args, " "), func(t *testing.T) {
			tp := readTemplate(t, pc.template)
			got := rolePolicy(t, tp, newScope(tp, pc.params), pc.role)
			want := iamPolicy(t, pc.args...)
			if !reflect.DeepEqual(got, want) {
				g, _ := json.MarshalIndent(got, "", " ")
				w, _ := json.MarshalIndent(want, "", " ")
				t.Errorf("the role's policy is not what handover iam-policy %s prints: run go run ./scripts/cfn-policy\ntemplate:\n%s\niam-policy:\n%s",
					strings.Join(pc.args, " "), g, w)
			}
		})
		covered[pc.template+"/"+pc.role] = true
	}
	for _, name := range templates {
		for id, r := range readTemplate(t, name).resources() {
			if r["Type"] == "AWS::IAM::Role" && !covered[name+"/"+id] {
				t.Errorf("%s: role %s has no entry in policyCases", name, id)
			}
		}
	}
}

// iamPolicy is what the CLI prints for the test scope.
func iamPolicy(t testing.TB, args ...string) any {
	t.Helper()
	full := append([]string{"iam-policy", "--group", testGroup, "--region", testRegion, "--account", testAccount, "--partition", testPartition}, args...)
	out, errOut, code := runCLI(full...)
	if code != 0 {
		t.Fatalf("handover %s: exit %d: %s", strings.Join(full, " "), code, errOut)
	}
	var v any
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("handover iam-policy printed no JSON: %v\n%s", err, out)
	}
	return v
}

// rolePolicy is the role's policies rendered and joined into one document.
func rolePolicy(t testing.TB, tp template, s scope, role string) any {
	t.Helper()
	var docs []any
	for _, p := range listOf(props(tp.resource(t, role))["Policies"]) {
		docs = append(docs, p.(map[string]any)["PolicyDocument"])
	}
	var attached []string
	for id, r := range tp.resources() {
		if r["Type"] != "AWS::IAM::Policy" {
			continue
		}
		for _, ref := range listOf(props(r)["Roles"]) {
			if reflect.DeepEqual(ref, map[string]any{"Ref": role}) {
				attached = append(attached, id)
			}
		}
	}
	sort.Strings(attached)
	for _, id := range attached {
		r := tp.resources()[id]
		if c, ok := r["Condition"].(string); ok {
			if on, err := s.condition(c); err != nil {
				t.Fatal(err)
			} else if !on {
				continue
			}
		}
		docs = append(docs, props(r)["PolicyDocument"])
	}
	statements := []any{}
	for _, d := range docs {
		r, err := s.render(d)
		if err != nil {
			t.Fatalf("%s: %v", role, err)
		}
		doc := r.(map[string]any)
		if doc["Version"] != "2012-10-17" {
			t.Errorf("%s: a policy of Version %v", role, doc["Version"])
		}
		statements = append(statements, listOf(doc["Statement"])...)
	}
	if len(docs) == 0 {
		t.Fatalf("%s has no policy", role)
	}
	return map[string]any{"Version": "2012-10-17", "Statement": statements}
}

func listOf(v any) []any {
	l, _ := v.([]any)
	return l
}

// instanceSettings are the handover:* tags a template gives its instances (launch template, group
// propagation, instance), key to value as written (a string or an intrinsic).
func instanceSettings(tp template) map[string]any {
	out := map[string]any{}
	add := func(tags any) {
		for _, tag := range listOf(tags) {
			m, _ := tag.(map[string]any)
			if k, _ := m["Key"].(string); strings.HasPrefix(k, "handover:") {
				out[k] = m["Value"]
			}
		}
	}
	for _, r := range tp.resources() {
		p := props(r)
		switch r["Type"] {
		case "AWS::EC2::LaunchTemplate":
			data, _ := p["LaunchTemplateData"].(map[string]any)
			for _, ts := range listOf(data["TagSpecifications"]) {
				if ts.(map[string]any)["ResourceType"] == "instance" {
					add(ts.(map[string]any)["Tags"])
				}
			}
		case "AWS::AutoScaling::AutoScalingGroup":
			for _, tag := range listOf(p["Tags"]) {
				if tag.(map[string]any)["PropagateAtLaunch"] == true {
					add([]any{tag})
				}
			}
		case "AWS::EC2::Instance":
			add(p["Tags"])
		}
	}
	return out
}

// TestPolicyOptionsMatchTheInstanceSettings: the options the instance role's policy is made for are
// those its instances are set to use, by their tags: --keep when the snapshot timer keeps N, --kms-key
// with a key, and none of --delete-superseded, --takeover, --on-rebalance that no tag turns on.
func TestPolicyOptionsMatchTheInstanceSettings(t *testing.T) {
	t.Parallel()
	tagOfOption := map[string]string{"--keep": "handover:keep", "--kms-key": "handover:kms-key-id",
		"--delete-superseded": "handover:delete-superseded", "--takeover": "handover:takeover", "--on-rebalance": "handover:on-rebalance"}
	for _, pc := range policyCases {
		if pc.role != "InstanceRole" {
			continue
		}
		tp := readTemplate(t, pc.template)
		s := newScope(tp, pc.params)
		settings := instanceSettings(tp)
		for opt, tag := range tagOfOption {
			v, err := s.render(settings[tag])
			if err != nil {
				t.Fatal(err)
			}
			set := settings[tag] != nil && v != "" && v != "false" && v != "0" && v != "off"
			if given := contains(pc.args, opt); given != set {
				t.Errorf("%s with %v: instance tag %s=%v, but the policy is made with%s %s", pc.template, pc.params, tag, v, map[bool]string{true: "", false: "out"}[given], opt)
			}
		}
	}
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

// TestInstanceTagsAreHandoverSettings: every handover:* tag the templates put on instances is a flag of
// some command (read as its setting) or a tag of the contract (DESIGN.md: handover:role).
func TestInstanceTagsAreHandoverSettings(t *testing.T) {
	t.Parallel()
	c := readCLI(t)
	for _, name := range templates {
		for tag := range instanceSettings(readTemplate(t, name)) {
			if f := strings.TrimPrefix(tag, "handover:"); !c.anyFlag(f) && tag != "handover:role" {
				t.Errorf("%s: instance tag %s is no handover flag (handover:<flag>) and not handover:role", name, tag)
			}
		}
	}
}

// TestLambdaEnvironmentIsWhatTheFunctionReads: the function's HANDOVER_* variables are the ones
// cmd/handover-failover reads (its config.go names each one as a string).
func TestLambdaEnvironmentIsWhatTheFunctionReads(t *testing.T) {
	t.Parallel()
	src, err := os.ReadFile("../../cmd/handover-failover/config.go")
	if err != nil {
		t.Fatal(err)
	}
	reads := map[string]bool{}
	for _, m := range regexp.MustCompile(`"(HANDOVER_[A-Z0-9_]+)"`).FindAllStringSubmatch(string(src), -1) {
		reads[m[1]] = true
	}
	if len(reads) < 5 {
		t.Fatalf("found only %v in cmd/handover-failover/config.go", reads)
	}
	n := 0
	for _, name := range templates {
		for id, r := range readTemplate(t, name).resources() {
			if r["Type"] != "AWS::Lambda::Function" {
				continue
			}
			env, _ := props(r)["Environment"].(map[string]any)
			vars, _ := env["Variables"].(map[string]any)
			for k := range vars {
				n++
				if !reads[k] {
					t.Errorf("%s: %s sets %s, which handover-failover does not read (it reads %v)", name, id, k, keys(reads))
				}
			}
		}
	}
	if n == 0 {
		t.Error("no function environment found")
	}
}

func keys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// userData is the script a launch template or instance runs: Fn::Base64 of a literal.
func userData(t testing.TB, tp template) map[string]string {
	t.Helper()
	out := map[string]string{}
	for id, r := range tp.resources() {
		p := props(r)
		if data, ok := p["LaunchTemplateData"].(map[string]any); ok {
			p = data
		}
		ud, ok := p["UserData"]
		if !ok {
			continue
		}
		b64, _ := ud.(map[string]any)["Fn::Base64"].(string)
		if b64 == "" {
			t.Fatalf("%s: UserData is not Fn::Base64 of a literal script", id)
		}
		out[id] = b64
	}
	return out
}

// TestUserDataIsTheScript: the templates run scripts/user-data.sh as it is (and within EC2's 16 KB).
func TestUserDataIsTheScript(t *testing.T) {
	t.Parallel()
	script, err := os.ReadFile("../../scripts/user-data.sh")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, name := range templates {
		for id, ud := range userData(t, readTemplate(t, name)) {
			n++
			if ud != string(script) {
				t.Errorf("%s: the user data of %s is not scripts/user-data.sh: run go run ./scripts/cfn-policy", name, id)
			}
			// https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/user-data.html: 16 KB before base64.
			if len(ud) > 16*1024 {
				t.Errorf("%s: user data of %d bytes, over EC2's 16 KB", id, len(ud))
			}
		}
	}
	if n == 0 {
		t.Error("no template runs the user data")
	}
}

var (
	// An invocation: handover, /usr/bin/handover or the script's $bin where a command starts (a line, or
	// after ; & | ( $( or !), not in a message that names it.
	invocationRE = regexp.MustCompile(`(?m)(?:^|[;&|(!]|\$\()[ \t]*(?:"\$bin"|\$bin|/usr/bin/handover|handover)[ \t]+([a-z][a-z-]*)([^\n;&|)]*)`)
	flagUseRE    = regexp.MustCompile(`(?:^|\s)--([a-z][a-z0-9-]*)`)
	envUseRE     = regexp.MustCompile(`HANDOVER_[A-Z0-9_]+`)
	unitUseRE    = regexp.MustCompile(`handover-[a-z]+\.(?:service|timer)`)
)

// scriptProblems lists every handover command, flag, HANDOVER_* variable and handover unit a shell
// script uses that does not exist.
func scriptProblems(c cli, script string, units map[string]bool) []string {
	var problems []string
	var code []string // the script without its comments
	for _, line := range strings.Split(script, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(line), "#") {
			code = append(code, line)
		}
	}
	for _, m := range invocationRE.FindAllStringSubmatch(strings.Join(code, "\n"), -1) {
		cmd := m[1]
		if _, ok := c.commands[cmd]; !ok {
			problems = append(problems, fmt.Sprintf("handover %s: no such command", cmd))
			continue
		}
		for _, f := range flagUseRE.FindAllStringSubmatch(m[2], -1) {
			if !c.hasFlag(cmd, f[1]) {
				problems = append(problems, fmt.Sprintf("handover %s --%s: no such flag", cmd, f[1]))
			}
		}
	}
	for _, v := range envUseRE.FindAllString(script, -1) {
		flag := strings.ToLower(strings.ReplaceAll(strings.TrimPrefix(v, "HANDOVER_"), "_", "-"))
		if !c.anyFlag(flag) {
			problems = append(problems, fmt.Sprintf("%s: no command has --%s", v, flag))
		}
	}
	for _, u := range unitUseRE.FindAllString(script, -1) {
		if !units[u] {
			problems = append(problems, fmt.Sprintf("%s: no such unit in packaging/systemd", u))
		}
	}
	return problems
}

func packagedUnits(t testing.TB) map[string]bool {
	t.Helper()
	files, err := filepath.Glob("../systemd/handover-*")
	if err != nil || len(files) == 0 {
		t.Fatalf("no units in packaging/systemd (%v)", err)
	}
	out := map[string]bool{}
	for _, f := range files {
		out[filepath.Base(f)] = true
	}
	return out
}

// TestUserDataUsesOnlyWhatExists: every handover command and flag the user data (the script and each
// template's copy) runs, every HANDOVER_* variable and every handover unit it names exists, as the CLI
// itself and packaging/systemd say; and the check finds a wrong one.
func TestUserDataUsesOnlyWhatExists(t *testing.T) {
	t.Parallel()
	c := readCLI(t)
	units := packagedUnits(t)
	script, err := os.ReadFile("../../scripts/user-data.sh")
	if err != nil {
		t.Fatal(err)
	}
	scripts := map[string]string{"scripts/user-data.sh": string(script)}
	for _, name := range templates {
		for id, ud := range userData(t, readTemplate(t, name)) {
			scripts[name+" "+id] = ud
		}
	}
	for name, s := range scripts {
		if p := scriptProblems(c, s, units); len(p) > 0 {
			t.Errorf("%s:\n  %s", name, strings.Join(p, "\n  "))
		}
		if len(invocationRE.FindAllString(s, -1)) == 0 {
			t.Errorf("%s runs no handover command that the check could see", name)
		}
	}
	bad := "#!/bin/sh\n\"$bin\" up --no-such-flag\nhandover sideways\nHANDOVER_NO_SUCH=1 \"$bin\" version\nsystemctl start handover-nope.service\n"
	if p := scriptProblems(c, bad, units); len(p) != 4 {
		t.Errorf("the check found %d problems in a script with 4:\n%s", len(p), strings.Join(p, "\n"))
	}
}

// TestAutoScalingSingletonShape: what the pattern rests on, as the template says it: IMDSv2 required with
// a hop limit of 1 or 2 and tags in metadata; a group of exactly one over two subnets; the hooks named as
// the instance is told, with the results and timeouts handover is sized for; the group's tag on the group
// (propagated) and on the address; no Capacity Rebalancing; terminate before launch.
func TestAutoScalingSingletonShape(t *testing.T) {
	t.Parallel()
	tp := readTemplate(t, "asg-singleton.yaml")
	c := readCLI(t)
	s := newScope(tp, nil)
	lt := props(tp.resource(t, "LaunchTemplate"))["LaunchTemplateData"].(map[string]any)
	md := lt["MetadataOptions"].(map[string]any)
	if md["HttpTokens"] != "required" || md["InstanceMetadataTags"] != "enabled" || md["HttpEndpoint"] != "enabled" {
		t.Errorf("metadata options %v: want IMDSv2 required, the endpoint and tags in metadata enabled", md)
	}
	if h := md["HttpPutResponseHopLimit"]; h != 1 && h != 2 {
		t.Errorf("hop limit %v, want 1 (or 2 for containers)", h)
	}

	asg := props(tp.resource(t, "AutoScalingGroup"))
	for _, k := range []string{"MinSize", "MaxSize", "DesiredCapacity"} {
		if asg[k] != "1" {
			t.Errorf("%s = %v, want 1", k, asg[k])
		}
	}
	if z := listOf(asg["VPCZoneIdentifier"]); len(z) != 2 || reflect.DeepEqual(z[0], z[1]) {
		t.Errorf("VPCZoneIdentifier %v: want two subnet parameters", z)
	}
	if asg["CapacityRebalance"] != false {
		t.Errorf("CapacityRebalance %v: handover up refuses it", asg["CapacityRebalance"])
	}
	if mp, _ := asg["InstanceMaintenancePolicy"].(map[string]any); mp["MinHealthyPercentage"] != 0 || mp["MaxHealthyPercentage"] != 100 {
		t.Errorf("instance maintenance policy %v: want terminate before launch (0/100)", mp)
	}
	if got, _ := s.render(asg["AutoScalingGroupName"]); got != testGroup {
		t.Errorf("group name %v, want the handover group", got)
	}

	settings := instanceSettings(tp)
	hooks := map[string]map[string]any{}
	for _, h := range listOf(asg["LifecycleHookSpecificationList"]) {
		hm := h.(map[string]any)
		hooks[hm["LifecycleTransition"].(string)] = hm
	}
	launch, term := hooks["autoscaling:EC2_INSTANCE_LAUNCHING"], hooks["autoscaling:EC2_INSTANCE_TERMINATING"]
	if launch == nil || term == nil {
		t.Fatalf("hooks %v: want a launch and a termination hook", hooks)
	}
	if launch["LifecycleHookName"] != settings["handover:launch-hook"] || term["LifecycleHookName"] != settings["handover:terminate-hook"] {
		t.Errorf("hooks %v/%v, but the instance is told handover:launch-hook=%v handover:terminate-hook=%v",
			launch["LifecycleHookName"], term["LifecycleHookName"], settings["handover:launch-hook"], settings["handover:terminate-hook"])
	}
	if launch["DefaultResult"] != "ABANDON" || term["DefaultResult"] != "CONTINUE" {
		t.Errorf("default results %v/%v: want ABANDON (an unfinished up is replaced) and CONTINUE (a dead down does not stop the termination)",
			launch["DefaultResult"], term["DefaultResult"])
	}
	seconds := func(v any) time.Duration {
		r, err := s.render(v)
		if err != nil {
			t.Fatal(err)
		}
		n, err := strconv.Atoi(fmt.Sprint(r))
		if err != nil {
			t.Fatalf("timeout %v: %v", r, err)
		}
		return time.Duration(n) * time.Second
	}
	// A down whose heartbeats all fail still has its whole bound.
	if tt, down := seconds(term["HeartbeatTimeout"]), c.defaultDuration(t, "down", "timeout"); tt < down {
		t.Errorf("termination hook timeout %s is shorter than down's --timeout %s", tt, down)
	}
	// up's heartbeats carry it through its whole bound within the global timeout (100 heartbeat
	// timeouts), and the timeout leaves a boot room before the first heartbeat.
	lt1, up := seconds(launch["HeartbeatTimeout"]), c.defaultDuration(t, "up", "timeout")
	if 100*lt1 < up+c.defaultDuration(t, "up", "imds-timeout") || lt1 < 5*time.Minute {
		t.Errorf("launch hook timeout %s: want at least 5m of boot, and 100 of it above up's --timeout %s", lt1, up)
	}
	if !reflect.DeepEqual(settings["handover:group"], map[string]any{"Ref": "GroupName"}) {
		t.Errorf("instances get handover:group=%v, want the GroupName parameter", settings["handover:group"])
	}
	eip := props(tp.resource(t, "ElasticIP"))
	if !hasTag(eip["Tags"], "handover:group", map[string]any{"Ref": "GroupName"}) {
		t.Errorf("the Elastic IP is not tagged handover:group: %v", eip["Tags"])
	}
}

func hasTag(tags any, key string, value any) bool {
	for _, tag := range listOf(tags) {
		m := tag.(map[string]any)
		if m["Key"] == key && reflect.DeepEqual(m["Value"], value) {
			return true
		}
	}
	return false
}

// TestStandbyFailoverShape: the instances carry the group and their roles; the address is the group's;
// each instance's status check alarm and the state-change rule (over both instances) invoke the
// function, each with a permission for its principal and its own ARN; the function runs the zip on
// provided.al2023 with its bootstrap handler.
func TestStandbyFailoverShape(t *testing.T) {
	t.Parallel()
	tp := readTemplate(t, "standby-failover.yaml")
	s := newScope(tp, map[string]string{"LambdaBucket": "b"})
	group := map[string]any{"Ref": "GroupName"}
	for id, role := range map[string]string{"Primary": "primary", "Standby": "standby"} {
		p := props(tp.resource(t, id))
		if !hasTag(p["Tags"], "handover:group", group) || !hasTag(p["Tags"], "handover:role", role) {
			t.Errorf("%s tags %v: want handover:group and handover:role=%s", id, p["Tags"], role)
		}
	}
	if !hasTag(props(tp.resource(t, "ElasticIP"))["Tags"], "handover:group", group) {
		t.Error("the Elastic IP is not tagged handover:group")
	}
	fn := props(tp.resource(t, "Function"))
	if fn["Runtime"] != "provided.al2023" || fn["Handler"] != "bootstrap" {
		t.Errorf("function runtime %v handler %v", fn["Runtime"], fn["Handler"])
	}
	fnArn := map[string]any{"Fn::GetAtt": []any{"Function", "Arn"}}
	perms := map[string]any{} // principal source ARN (rendered) -> principal
	for _, r := range tp.resources() {
		if r["Type"] == "AWS::Lambda::Permission" {
			p := props(r)
			src, err := s.render(p["SourceArn"])
			if err != nil {
				src = p["SourceArn"] // a GetAtt of the rule
			}
			perms[fmt.Sprint(src)] = p["Principal"]
		}
	}
	for _, id := range []string{"PrimaryStatusAlarm", "StandbyStatusAlarm"} {
		p := props(tp.resource(t, id))
		if !reflect.DeepEqual(listOf(p["AlarmActions"]), []any{fnArn}) || p["MetricName"] != "StatusCheckFailed" {
			t.Errorf("%s: actions %v metric %v: want the function on StatusCheckFailed", id, p["AlarmActions"], p["MetricName"])
		}
		name, err := s.render(p["AlarmName"])
		if err != nil {
			t.Fatal(err)
		}
		arn := fmt.Sprintf("arn:aws:cloudwatch:%s:%s:alarm:%s", testRegion, testAccount, name)
		if perms[arn] != "lambda.alarms.cloudwatch.amazonaws.com" {
			t.Errorf("%s: no permission for lambda.alarms.cloudwatch.amazonaws.com with source %s (have %v)", id, arn, perms)
		}
	}
	rule := props(tp.resource(t, "StateChangeRule"))
	detail := rule["EventPattern"].(map[string]any)["detail"].(map[string]any)
	if ids := listOf(detail["instance-id"]); len(ids) != 2 {
		t.Errorf("the rule watches %v, want both instances (the roles swap)", ids)
	}
	if !reflect.DeepEqual(listOf(rule["Targets"])[0].(map[string]any)["Arn"], fnArn) {
		t.Errorf("rule targets %v", rule["Targets"])
	}
	if perms[fmt.Sprint(map[string]any{"Fn::GetAtt": []any{"StateChangeRule", "Arn"}})] != "events.amazonaws.com" {
		t.Errorf("no permission for events.amazonaws.com from the rule (have %v)", perms)
	}
	basic, err := s.render(listOf(props(tp.resource(t, "FunctionRole"))["ManagedPolicyArns"]))
	if err != nil || !reflect.DeepEqual(basic, []any{"arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"}) {
		t.Errorf("function role managed policies %v (%v): want AWSLambdaBasicExecutionRole for its logs", basic, err)
	}
}

// TestGroupNameParameterIsHandoversRule: the templates accept exactly the group names handover does
// (cloud.ValidGroupName), so that a stack never starts instances whose every command exits 2.
func TestGroupNameParameterIsHandoversRule(t *testing.T) {
	t.Parallel()
	samples := []string{"g1", "orders-db.prod_1", strings.Repeat("a", 64), "", strings.Repeat("a", 65), "a b", "a/b", "ä", "-x", "a:b"}
	for _, name := range templates {
		p := readTemplate(t, name)["Parameters"].(map[string]any)["GroupName"].(map[string]any)
		re, err := regexp.Compile(p["AllowedPattern"].(string))
		if err != nil {
			t.Fatalf("%s: GroupName AllowedPattern: %v", name, err)
		}
		for _, s := range samples {
			if re.MatchString(s) != cloud.ValidGroupName(s) {
				t.Errorf("%s: GroupName %q: the template says %v, handover %v", name, s, re.MatchString(s), cloud.ValidGroupName(s))
			}
		}
	}
}
