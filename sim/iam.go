package sim

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
)

// IAM, optional: a policy attached to an instance's role (SetInstancePolicy) authorizes every EC2 and Auto
// Scaling call made with that instance's credentials (InstanceEnv's access key). A caller without a policy
// (every caller by default, and the admin clients of tests) is not checked at all.
//
// The evaluation is IAM's for one identity-based policy
// (https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_evaluation-logic.html): a Deny
// statement that matches wins, then an Allow statement that matches, else the call is implicitly denied.
// A statement matches when its Action (or NotAction), its Resource (or NotResource) and every one of its
// conditions do. An API call is authorized against each resource the Service Authorization Reference lists
// for its action (iam_actions.go), and must be allowed on every one of them.
//
// What is modelled: Action and Resource with the * and ? wildcards, NotAction, NotResource, and the
// condition operators String(Not)Equals(IgnoreCase), String(Not)Like, Bool and Null, with ...IfExists and
// the ForAllValues: / ForAnyValue: set operators. What is refused, loudly, when a policy is attached:
// Principal (an identity-based policy has none), policy variables (${...}), any other operator, a
// single-valued operator on the multivalued aws:TagKeys, and unknown elements. KMS is not served, so the
// kms: statements of `handover iam-policy --kms-key` parse but never apply.

// Policy is a parsed IAM identity-based policy.
type Policy struct {
	statements []iamStatement
}

type iamStatement struct {
	sid         string
	deny        bool
	actions     []string // patterns, matched without regard to case
	notAction   bool
	resources   []string // ARN patterns
	notResource bool
	conditions  []iamCondition
}

// iamCondition is one key of one operator of a Condition block. Its values are ORed; the conditions of a
// statement are ANDed.
type iamCondition struct {
	operator string // as written: "ForAllValues:StringEquals"
	base     string // without set operator and IfExists: "StringEquals"
	set      string // "", "ForAllValues" or "ForAnyValue"
	ifExists bool
	key      string // lower case: condition key names are not case-sensitive
	values   []string
}

// baseOperators are the condition operators the simulator evaluates.
// https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_condition_operators.html
var baseOperators = map[string]bool{
	"StringEquals": true, "StringNotEquals": true, "StringEqualsIgnoreCase": true, "StringNotEqualsIgnoreCase": true,
	"StringLike": true, "StringNotLike": true, "Bool": true, "Null": true,
}

// multivaluedKeys are the context keys that hold a set of values, which only a set operator compares.
// https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_condition-single-vs-multi-valued-context-keys.html
var multivaluedKeys = map[string]bool{"aws:tagkeys": true}

// ParsePolicy parses an IAM policy document (the JSON `handover iam-policy` prints), refusing what the
// simulator does not evaluate.
func ParsePolicy(doc []byte) (*Policy, error) {
	var top struct {
		Version   string          `json:"Version"`
		ID        string          `json:"Id"`
		Statement json.RawMessage `json:"Statement"`
	}
	dec := json.NewDecoder(bytes.NewReader(doc))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&top); err != nil {
		return nil, fmt.Errorf("iam policy: %w", err)
	}
	if top.Version != "2012-10-17" && top.Version != "2008-10-17" {
		return nil, fmt.Errorf("iam policy: Version %q: want 2012-10-17", top.Version)
	}
	var raws []json.RawMessage
	if t := bytes.TrimSpace(top.Statement); len(t) > 0 && t[0] == '{' {
		raws = []json.RawMessage{t}
	} else if err := json.Unmarshal(top.Statement, &raws); err != nil || len(raws) == 0 {
		return nil, fmt.Errorf("iam policy: Statement must be a statement or a non-empty list of them")
	}
	p := &Policy{}
	for i, raw := range raws {
		s, err := parseStatement(raw)
		if err != nil {
			return nil, fmt.Errorf("iam policy: statement %d: %w", i+1, err)
		}
		p.statements = append(p.statements, s)
	}
	return p, nil
}

func parseStatement(raw json.RawMessage) (iamStatement, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil {
		return iamStatement{}, err
	}
	var s iamStatement
	for name := range fields {
		switch name {
		case "Sid", "Effect", "Action", "NotAction", "Resource", "NotResource", "Condition":
		case "Principal", "NotPrincipal":
			return s, fmt.Errorf("%s: an identity-based policy names no principal", name)
		default:
			return s, fmt.Errorf("unknown element %q", name)
		}
	}
	if raw, ok := fields["Sid"]; ok {
		if err := json.Unmarshal(raw, &s.sid); err != nil {
			return s, fmt.Errorf("element Sid: %w", err)
		}
	}
	var effect string
	if err := json.Unmarshal(fields["Effect"], &effect); err != nil || (effect != "Allow" && effect != "Deny") {
		return s, fmt.Errorf("%s: Effect must be Allow or Deny", s.sid)
	}
	s.deny = effect == "Deny"
	var err error
	if s.actions, s.notAction, err = oneOf(fields, "Action", "NotAction"); err != nil {
		return s, fmt.Errorf("%s: %w", s.sid, err)
	}
	if s.resources, s.notResource, err = oneOf(fields, "Resource", "NotResource"); err != nil {
		return s, fmt.Errorf("%s: %w", s.sid, err)
	}
	for _, r := range s.resources {
		if strings.Contains(r, "${") {
			return s, fmt.Errorf("%s: Resource %q: policy variables are not supported by the simulator", s.sid, r)
		}
	}
	if raw, ok := fields["Condition"]; ok {
		if s.conditions, err = parseConditions(raw); err != nil {
			return s, fmt.Errorf("%s: %w", s.sid, err)
		}
	}
	return s, nil
}

// oneOf reads exactly one of the element pos or its negation neg (Action/NotAction, Resource/NotResource).
func oneOf(fields map[string]json.RawMessage, pos, neg string) ([]string, bool, error) {
	p, hasPos := fields[pos]
	n, hasNeg := fields[neg]
	if hasPos == hasNeg {
		return nil, false, fmt.Errorf("exactly one of %s and %s is required", pos, neg)
	}
	raw, name := p, pos
	if hasNeg {
		raw, name = n, neg
	}
	vs, err := stringList(raw, false)
	if err != nil || len(vs) == 0 {
		return nil, false, fmt.Errorf("%s must be a string or a non-empty list of strings", name)
	}
	return vs, hasNeg, nil
}

// stringList reads a string or a list of them; scalars (condition values may be booleans or numbers)
// are taken as they are written.
func stringList(raw json.RawMessage, scalars bool) ([]string, error) {
	var one any
	if err := json.Unmarshal(raw, &one); err != nil {
		return nil, err
	}
	items, isList := one.([]any)
	if !isList {
		items = []any{one}
	}
	out := make([]string, 0, len(items))
	for _, it := range items {
		switch v := it.(type) {
		case string:
			out = append(out, v)
		case bool, float64:
			if !scalars {
				return nil, fmt.Errorf("%v is not a string", v)
			}
			out = append(out, fmt.Sprint(v))
		default:
			return nil, fmt.Errorf("%v is not a string", v)
		}
	}
	return out, nil
}

func parseConditions(raw json.RawMessage) ([]iamCondition, error) {
	var block map[string]map[string]json.RawMessage
	if err := json.Unmarshal(raw, &block); err != nil {
		return nil, fmt.Errorf("element Condition: %w", err)
	}
	var out []iamCondition
	for op, keys := range block {
		c := iamCondition{operator: op, base: op}
		if set, rest, ok := strings.Cut(op, ":"); ok {
			if set != "ForAllValues" && set != "ForAnyValue" {
				return nil, fmt.Errorf("condition operator %q: unknown set operator %q", op, set)
			}
			c.set, c.base = set, rest
		}
		if b, ok := strings.CutSuffix(c.base, "IfExists"); ok {
			c.base, c.ifExists = b, true
		}
		if !baseOperators[c.base] {
			return nil, fmt.Errorf("condition operator %q is not supported by the simulator", op)
		}
		if c.base == "Null" && (c.set != "" || c.ifExists) {
			return nil, fmt.Errorf("condition operator %q: Null takes no set operator and no IfExists", op)
		}
		for key, rawValues := range keys {
			values, err := stringList(rawValues, true)
			if err != nil {
				return nil, fmt.Errorf("%s %s: %w", op, key, err)
			}
			for _, v := range values {
				if strings.Contains(v, "${") {
					return nil, fmt.Errorf("%s %s: policy variables are not supported by the simulator", op, key)
				}
			}
			k := strings.ToLower(key)
			if multivaluedKeys[k] && c.set == "" && c.base != "Null" {
				return nil, fmt.Errorf("%s %s: a multivalued key needs the set operator ForAllValues or ForAnyValue", op, key)
			}
			cc := c
			cc.key, cc.values = k, values
			out = append(out, cc)
		}
	}
	// A stable order: the evaluation does not depend on it, the tests' messages do.
	sort.Slice(out, func(i, j int) bool { return out[i].operator+out[i].key < out[j].operator+out[j].key })
	return out, nil
}

// iamContext is the request context a statement's conditions see: key (lower case) -> values. A key that
// is absent is not in the map.
type iamContext map[string][]string

// iamDecision is the result of evaluating one action on one resource.
type iamDecision int

const (
	implicitDeny iamDecision = iota
	allowed
	explicitDeny
)

// decide evaluates action on resource (an ARN, or "*" for actions without resource types) in ctx.
func (p *Policy) decide(action, resource string, ctx iamContext) iamDecision {
	allow := false
	for _, s := range p.statements {
		if !s.matches(action, resource, ctx) {
			continue
		}
		if s.deny {
			return explicitDeny
		}
		allow = true
	}
	if allow {
		return allowed
	}
	return implicitDeny
}

func (s iamStatement) matches(action, resource string, ctx iamContext) bool {
	actionIn := false
	for _, a := range s.actions {
		if globMatch(strings.ToLower(a), strings.ToLower(action)) {
			actionIn = true
			break
		}
	}
	if actionIn == s.notAction {
		return false
	}
	resourceIn := false
	for _, r := range s.resources {
		if arnMatch(r, resource) {
			resourceIn = true
			break
		}
	}
	if resourceIn == s.notResource {
		return false
	}
	for _, c := range s.conditions {
		if !c.holds(ctx) {
			return false
		}
	}
	return true
}

// holds evaluates one condition key, as IAM does: a key absent from the request makes a condition false,
// except a negated operator (true), ...IfExists (true), ForAllValues (true: every one of no values
// matches) and Null. https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_condition_operators.html
func (c iamCondition) holds(ctx iamContext) bool {
	got, present := ctx[c.key]
	present = present && len(got) > 0
	if c.base == "Null" {
		for _, v := range c.values {
			if strings.EqualFold(v, "true") != present {
				return true
			}
		}
		return false
	}
	negated := strings.Contains(c.base, "Not")
	if !present {
		switch {
		case c.ifExists:
			return true
		case c.set == "ForAllValues":
			return true
		case c.set == "ForAnyValue":
			return false
		}
		return negated
	}
	one := func(v string) bool { return c.valueMatches(v) != negated }
	switch c.set {
	case "ForAllValues":
		for _, v := range got {
			if !one(v) {
				return false
			}
		}
		return true
	case "ForAnyValue":
		for _, v := range got {
			if one(v) {
				return true
			}
		}
		return false
	}
	return one(got[0])
}

// valueMatches reports whether the context value v matches any of the condition's values under the
// positive form of its operator.
func (c iamCondition) valueMatches(v string) bool {
	for _, want := range c.values {
		switch c.base {
		case "StringEquals", "StringNotEquals":
			if v == want {
				return true
			}
		case "StringEqualsIgnoreCase", "StringNotEqualsIgnoreCase", "Bool":
			if strings.EqualFold(v, want) {
				return true
			}
		case "StringLike", "StringNotLike":
			if globMatch(want, v) {
				return true
			}
		}
	}
	return false
}

// arnMatch matches an ARN against a Resource pattern: "*" matches any resource; otherwise the six fields
// (arn:partition:service:region:account:resource) are matched one by one, so a wildcard does not cross
// the colon between two fields (the resource field itself may hold colons, as Auto Scaling's do).
// https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_resource.html
func arnMatch(pattern, arn string) bool {
	if pattern == "*" {
		return true
	}
	pf, af := strings.SplitN(pattern, ":", 6), strings.SplitN(arn, ":", 6)
	if len(pf) != 6 || len(af) != 6 {
		return false
	}
	for i := range pf {
		if !globMatch(pf[i], af[i]) {
			return false
		}
	}
	return true
}

// globMatch matches s against a pattern where * is any run of characters and ? any one character.
func globMatch(pattern, s string) bool {
	// Iterative matching with backtracking to the last *: linear in practice, no recursion.
	p, i := 0, 0
	star, mark := -1, 0
	for i < len(s) {
		switch {
		case p < len(pattern) && (pattern[p] == '?' || pattern[p] == s[i]):
			p++
			i++
		case p < len(pattern) && pattern[p] == '*':
			star, mark = p, i
			p++
		case star >= 0:
			p = star + 1
			mark++
			i = mark
		default:
			return false
		}
	}
	for p < len(pattern) && pattern[p] == '*' {
		p++
	}
	return p == len(pattern)
}
