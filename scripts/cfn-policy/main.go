// Command cfn-policy writes the generated blocks of the CloudFormation templates under
// packaging/cloudformation/: the IAM policies, from `handover iam-policy` itself (run in process, as
// scripts/manpage runs the CLI), and the user data, from scripts/user-data.sh. So a template's policy is
// always what the code calls, and its user data the script that is tested.
//
//	go run ./scripts/cfn-policy          # rewrite the blocks
//	go run ./scripts/cfn-policy -check   # exit 1 when a block is not what it would write (CI)
//
// A block is the lines between a BEGIN and an END comment at the same indentation:
//
//	# BEGIN scripts/cfn-policy: iam-policy --commands failover
//	PolicyDocument: ...
//	# END scripts/cfn-policy
//
// What follows "BEGIN scripts/cfn-policy:" says what goes there:
//   - `iam-policy ARGS`: PolicyDocument, the policy `handover iam-policy ARGS` prints for the stack's own
//     group, region, account and partition. The policy is made with stand-in values of --group, --region,
//     --account and --partition that appear nowhere else, which then become ${GroupName}, ${AWS::Region},
//     ${AWS::AccountId} and ${AWS::Partition} (!Sub; !Ref for a string that is one parameter alone).
//     `--kms-key NAME` passes a stand-in key ARN that becomes the template parameter NAME.
//   - `iam-policy ARGS | added-by FLAG`: PolicyDocument with only the statements that FLAG (and its value)
//     adds to the policy of the other ARGS, for an AWS::IAM::Policy that a condition attaches.
//   - `scripts/user-data.sh`: Fn::Base64 of the script as a literal block.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"github.com/handover/handover/agent"
)

// The stand-in values: accepted by iam-policy's checks, and found nowhere else in a policy.
const (
	sentinelGroup     = "CfnPolicyGroupStandIn"
	sentinelRegion    = "zz-cfnpolicy-9"
	sentinelAccount   = "999988887777"
	sentinelPartition = "aws-cfnpolicy"
	sentinelKMSKey    = "arn:" + sentinelPartition + ":kms:" + sentinelRegion + ":" + sentinelAccount + ":key/cfn-policy-key-stand-in"
)

const marker = "scripts/cfn-policy"

var (
	beginRE = regexp.MustCompile(`^(\s*)# BEGIN ` + marker + `: (.+)$`)
	endRE   = regexp.MustCompile(`^(\s*)# END ` + marker + `$`)
)

func main() {
	check := flag.Bool("check", false, "do not write: exit 1 when a block differs from what would be written")
	dir := flag.String("dir", "packaging/cloudformation", "the templates' directory")
	flag.Parse()
	files, err := filepath.Glob(filepath.Join(*dir, "*.yaml"))
	if err == nil && len(files) == 0 {
		err = fmt.Errorf("no templates in %s", *dir)
	}
	if err != nil {
		fatal(err)
	}
	stale := 0
	for _, f := range files {
		old, err := os.ReadFile(f)
		if err != nil {
			fatal(err)
		}
		updated, err := Rewrite(string(old), ".")
		if err != nil {
			fatal(fmt.Errorf("%s: %w", f, err))
		}
		if updated == string(old) {
			continue
		}
		if *check {
			fmt.Fprintf(os.Stderr, "cfn-policy: %s is not what its generated blocks say: run go run ./scripts/cfn-policy\n", f)
			stale++
			continue
		}
		if err := os.WriteFile(f, []byte(updated), 0o644); err != nil {
			fatal(err)
		}
		fmt.Println("cfn-policy: wrote", f)
	}
	if stale > 0 {
		os.Exit(1)
	}
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "cfn-policy:", err)
	os.Exit(1)
}

// Rewrite returns the template with every generated block written anew; root is the repository's root
// (where scripts/user-data.sh is).
func Rewrite(template, root string) (string, error) {
	lines := strings.SplitAfter(template, "\n")
	var out strings.Builder
	for i := 0; i < len(lines); i++ {
		out.WriteString(lines[i])
		m := beginRE.FindStringSubmatch(strings.TrimRight(lines[i], "\n"))
		if m == nil {
			continue
		}
		indent, what := m[1], strings.TrimSpace(m[2])
		j := i + 1
		for ; j < len(lines); j++ {
			if e := endRE.FindStringSubmatch(strings.TrimRight(lines[j], "\n")); e != nil {
				if e[1] != indent {
					return "", fmt.Errorf("line %d: END at another indentation than the BEGIN of line %d", j+1, i+1)
				}
				break
			}
			if beginRE.MatchString(lines[j]) {
				return "", fmt.Errorf("line %d: BEGIN inside the block of line %d", j+1, i+1)
			}
		}
		if j == len(lines) {
			return "", fmt.Errorf("line %d: BEGIN without END", i+1)
		}
		block, err := generate(what, root)
		if err != nil {
			return "", fmt.Errorf("line %d (%s): %w", i+1, what, err)
		}
		for _, l := range block {
			if l == "" {
				out.WriteString("\n")
			} else {
				out.WriteString(indent + l + "\n")
			}
		}
		out.WriteString(lines[j])
		i = j
	}
	return out.String(), nil
}

// generate returns the block's lines, unindented.
func generate(what, root string) ([]string, error) {
	if what == "scripts/user-data.sh" {
		b, err := os.ReadFile(filepath.Join(root, what))
		if err != nil {
			return nil, err
		}
		s := string(b)
		if !strings.HasSuffix(s, "\n") || strings.HasSuffix(s, "\n\n") || strings.Contains(s, "\t") {
			return nil, errors.New("the script must end in exactly one newline and hold no tab (a YAML literal block keeps neither as they are)")
		}
		block := []string{"Fn::Base64: |"}
		for _, l := range strings.Split(strings.TrimSuffix(s, "\n"), "\n") {
			if l == "" {
				block = append(block, "")
			} else {
				block = append(block, "  "+l)
			}
		}
		return block, nil
	}
	args, ok := strings.CutPrefix(what, "iam-policy ")
	if !ok {
		return nil, errors.New(`want "iam-policy ARGS", "iam-policy ARGS | added-by FLAG" or "scripts/user-data.sh"`)
	}
	args, addedBy, _ := strings.Cut(args, "|")
	fields := strings.Fields(args)
	params := map[string]string{sentinelGroup: "GroupName"}
	for k, f := range fields {
		if f == "--kms-key" && k+1 < len(fields) {
			params[sentinelKMSKey] = fields[k+1]
			fields[k+1] = sentinelKMSKey
		}
	}
	doc, err := policy(fields)
	if err != nil {
		return nil, err
	}
	if addedBy = strings.TrimSpace(addedBy); addedBy != "" {
		flagName, ok := strings.CutPrefix(addedBy, "added-by ")
		if !ok {
			return nil, fmt.Errorf("%q: want added-by FLAG", addedBy)
		}
		base, err := policy(without(fields, strings.TrimSpace(flagName)))
		if err != nil {
			return nil, err
		}
		doc, err = addedStatements(doc, base)
		if err != nil {
			return nil, err
		}
	}
	return append([]string{"PolicyDocument:"}, yamlLines(doc, params, 1)...), nil
}

// without is args less the flag and its value.
func without(args []string, flagName string) []string {
	var out []string
	for k := 0; k < len(args); k++ {
		if args[k] == flagName {
			k++ // its value
			continue
		}
		if strings.HasPrefix(args[k], flagName+"=") {
			continue
		}
		out = append(out, args[k])
	}
	return out
}

// policy runs handover iam-policy with the stand-in scope.
func policy(args []string) (value, error) {
	full := append([]string{"iam-policy"}, args...)
	full = append(full, "--group", sentinelGroup, "--region", sentinelRegion, "--account", sentinelAccount, "--partition", sentinelPartition)
	var stdout, stderr bytes.Buffer
	env := agent.Env{Getenv: func(string) string { return "" }, Stdout: &stdout, Stderr: &stderr}
	if code := agent.Main(context.Background(), full, env); code != 0 {
		return value{}, fmt.Errorf("handover %s: exit %d: %s", strings.Join(full, " "), code, strings.TrimSpace(stderr.String()))
	}
	return decode(json.NewDecoder(&stdout))
}

// addedStatements is the policy of the statements of doc that base does not have, in doc's order.
func addedStatements(doc, base value) (value, error) {
	have := map[string]bool{}
	for _, s := range base.get("Statement").arr {
		have[s.canonical()] = true
	}
	st := doc.get("Statement")
	if st.kind != kindArray {
		return value{}, errors.New("the policy has no Statement list")
	}
	var added []value
	for _, s := range st.arr {
		if !have[s.canonical()] {
			added = append(added, s)
		}
	}
	if len(added) == 0 {
		return value{}, errors.New("the flag adds no statement")
	}
	if len(added)+len(base.get("Statement").arr) != len(st.arr) {
		return value{}, errors.New("the flag changes statements of the policy instead of only adding some: one policy cannot be the sum of two")
	}
	out := value{kind: kindObject}
	out.set("Version", doc.get("Version"))
	out.set("Statement", value{kind: kindArray, arr: added})
	return out, nil
}

// value is JSON with the order of object keys kept (the policy is printed in a deterministic order, and
// the template keeps it).
type value struct {
	kind kind
	keys []string
	obj  map[string]value
	arr  []value
	str  string // a string's text, or a number's, boolean's or null's JSON
}

type kind int

const (
	kindObject kind = iota
	kindArray
	kindString
	kindLiteral
)

func (v value) get(k string) value { return v.obj[k] }

func (v *value) set(k string, x value) {
	if v.obj == nil {
		v.obj = map[string]value{}
	}
	if _, ok := v.obj[k]; !ok {
		v.keys = append(v.keys, k)
	}
	v.obj[k] = x
}

func (v value) canonical() string {
	var b strings.Builder
	switch v.kind {
	case kindObject:
		keys := append([]string(nil), v.keys...)
		sort.Strings(keys)
		b.WriteString("{")
		for _, k := range keys {
			fmt.Fprintf(&b, "%q:%s,", k, v.obj[k].canonical())
		}
		b.WriteString("}")
	case kindArray:
		b.WriteString("[")
		for _, x := range v.arr {
			b.WriteString(x.canonical() + ",")
		}
		b.WriteString("]")
	case kindString:
		fmt.Fprintf(&b, "%q", v.str)
	default:
		b.WriteString(v.str)
	}
	return b.String()
}

func decode(d *json.Decoder) (value, error) {
	d.UseNumber()
	v, err := decodeValue(d)
	if err != nil {
		return value{}, fmt.Errorf("iam-policy printed no JSON document: %w", err)
	}
	if _, err := d.Token(); err != io.EOF {
		return value{}, errors.New("iam-policy printed more than one JSON document")
	}
	return v, nil
}

func decodeValue(d *json.Decoder) (value, error) {
	t, err := d.Token()
	if err != nil {
		return value{}, err
	}
	switch t := t.(type) {
	case json.Delim:
		switch t {
		case '{':
			v := value{kind: kindObject}
			for d.More() {
				k, err := d.Token()
				if err != nil {
					return value{}, err
				}
				x, err := decodeValue(d)
				if err != nil {
					return value{}, err
				}
				v.set(k.(string), x)
			}
			_, err := d.Token()
			return v, err
		case '[':
			v := value{kind: kindArray}
			for d.More() {
				x, err := decodeValue(d)
				if err != nil {
					return value{}, err
				}
				v.arr = append(v.arr, x)
			}
			_, err := d.Token()
			return v, err
		}
		return value{}, fmt.Errorf("unexpected %v", t)
	case string:
		return value{kind: kindString, str: t}, nil
	case json.Number:
		return value{kind: kindLiteral, str: t.String()}, nil
	case bool:
		return value{kind: kindLiteral, str: fmt.Sprint(t)}, nil
	case nil:
		return value{kind: kindLiteral, str: "null"}, nil
	}
	return value{}, fmt.Errorf("unexpected token %v", t)
}

// yamlLines renders v as block YAML, each level indented by two spaces, starting at level.
func yamlLines(v value, params map[string]string, level int) []string {
	pad := strings.Repeat("  ", level)
	var out []string
	switch v.kind {
	case kindObject:
		for _, k := range v.keys {
			x := v.obj[k]
			key := yamlKey(k)
			if scalar, ok := yamlScalar(x, params); ok {
				out = append(out, pad+key+": "+scalar)
				continue
			}
			out = append(out, pad+key+":")
			out = append(out, yamlLines(x, params, level+1)...)
		}
	case kindArray:
		for _, x := range v.arr {
			if scalar, ok := yamlScalar(x, params); ok {
				out = append(out, pad+"- "+scalar)
				continue
			}
			sub := yamlLines(x, params, level+1)
			// "- " then the first line of the item, the rest aligned under it.
			sub[0] = pad + "- " + strings.TrimPrefix(sub[0], pad+"  ")
			out = append(out, sub...)
		}
	}
	return out
}

var plainKeyRE = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9]*$`)

// yamlWords are plain words YAML 1.1 reads as null or a boolean (cfn-lint and CloudFormation read YAML
// 1.1): the condition operator Null must be quoted to stay a string.
var yamlWords = map[string]bool{"null": true, "true": true, "false": true, "yes": true, "no": true, "on": true, "off": true, "y": true, "n": true}

func yamlKey(k string) string {
	if plainKeyRE.MatchString(k) && !yamlWords[strings.ToLower(k)] {
		return k
	}
	return quote(k)
}

// yamlScalar renders a string, number or boolean, or an empty list or object; ok is false for the rest.
// A string holding a stand-in becomes !Sub (or !Ref when it is one parameter alone).
func yamlScalar(v value, params map[string]string) (string, bool) {
	switch v.kind {
	case kindString:
		return subOrLiteral(v.str, params), true
	case kindLiteral:
		return v.str, true
	case kindArray:
		if len(v.arr) == 0 {
			return "[]", true
		}
	case kindObject:
		if len(v.keys) == 0 {
			return "{}", true
		}
	}
	return "", false
}

func subOrLiteral(s string, params map[string]string) string {
	replacements := []struct{ from, to string }{}
	for from, name := range params {
		replacements = append(replacements, struct{ from, to string }{from, "${" + name + "}"})
	}
	// The longest first: the key's ARN holds the region, the account and the partition.
	sort.Slice(replacements, func(i, j int) bool { return len(replacements[i].from) > len(replacements[j].from) })
	replacements = append(replacements,
		struct{ from, to string }{sentinelRegion, "${AWS::Region}"},
		struct{ from, to string }{sentinelAccount, "${AWS::AccountId}"},
		struct{ from, to string }{sentinelPartition, "${AWS::Partition}"})
	// A "${" of the policy's own (an IAM policy variable) is written "${!" in Fn::Sub.
	escaped := strings.ReplaceAll(s, "${", "${!")
	out := escaped
	for _, r := range replacements {
		out = strings.ReplaceAll(out, r.from, r.to)
	}
	if out == escaped {
		return quote(s)
	}
	for _, name := range params {
		if out == "${"+name+"}" {
			return "!Ref " + name
		}
	}
	return "!Sub " + quote(out)
}

// quote is a YAML double-quoted scalar: JSON's string escapes are a subset of YAML's.
func quote(s string) string {
	var b bytes.Buffer
	e := json.NewEncoder(&b)
	e.SetEscapeHTML(false)
	_ = e.Encode(s)
	return strings.TrimSuffix(b.String(), "\n")
}
