package sim

import (
	"fmt"
	"net/url"
	"sort"
	"strconv"
	"strings"
)

// params reads the Query protocol's flattened form: lists are "Name.1",
// "Name.2" (EC2) or "Name.member.1" (Auto Scaling), structures "Name.Field".
type params struct{ v url.Values }

func (p params) get(k string) string { return p.v.Get(k) }

func (p params) has(k string) bool { _, ok := p.v[k]; return ok }

func (p params) boolean(k string) bool { return strings.EqualFold(p.v.Get(k), "true") }

func (p params) integer(k string, def int) (int, *apiError) {
	s := p.v.Get(k)
	if s == "" {
		return def, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0, badRequest("InvalidParameterValue", fmt.Sprintf("Value (%s) for parameter %s is invalid. Expected an integer.", s, k))
	}
	return n, nil
}

// indexes returns the distinct N of keys "prefix.N" or "prefix.N.*", sorted.
func (p params) indexes(prefix string) []int {
	seen := map[int]bool{}
	for k := range p.v {
		rest, ok := strings.CutPrefix(k, prefix+".")
		if !ok {
			continue
		}
		numPart, _, _ := strings.Cut(rest, ".")
		if n, err := strconv.Atoi(numPart); err == nil {
			seen[n] = true
		}
	}
	out := make([]int, 0, len(seen))
	for n := range seen {
		out = append(out, n)
	}
	sort.Ints(out)
	return out
}

// list returns the values of "prefix.1", "prefix.2", ... in index order.
func (p params) list(prefix string) []string {
	var out []string
	for _, n := range p.indexes(prefix) {
		if v, ok := p.v[prefix+"."+strconv.Itoa(n)]; ok && len(v) > 0 {
			out = append(out, v[0])
		}
	}
	return out
}

// members returns the Auto Scaling list "prefix.member.N".
func (p params) members(prefix string) []string { return p.list(prefix + ".member") }

type filter struct {
	Name   string
	Values []string
}

// filters reads "Filter.N.Name" and "Filter.N.Value.M".
func (p params) filters() []filter {
	var out []filter
	for _, n := range p.indexes("Filter") {
		pre := "Filter." + strconv.Itoa(n)
		out = append(out, filter{Name: p.get(pre + ".Name"), Values: p.list(pre + ".Value")})
	}
	return out
}

// tagSpecs reads "TagSpecification.N.ResourceType" and
// "TagSpecification.N.Tag.M.Key/Value" into resource type -> tags.
func (p params) tagSpecs(prefix string) map[string]map[string]string {
	out := map[string]map[string]string{}
	for _, n := range p.indexes(prefix) {
		pre := prefix + "." + strconv.Itoa(n)
		rt := p.get(pre + ".ResourceType")
		if out[rt] == nil {
			out[rt] = map[string]string{}
		}
		for k, v := range p.tags(pre + ".Tag") {
			out[rt][k] = v
		}
	}
	return out
}

// tags reads "prefix.N.Key" and "prefix.N.Value".
func (p params) tags(prefix string) map[string]string {
	out := map[string]string{}
	for _, n := range p.indexes(prefix) {
		pre := prefix + "." + strconv.Itoa(n)
		if k := p.get(pre + ".Key"); k != "" {
			out[k] = p.get(pre + ".Value")
		}
	}
	return out
}

// specTags picks the tags of one resource type from TagSpecifications and
// rejects resource types that do not belong to the call, as EC2 does.
func (p params) specTags(resourceType string) (map[string]string, *apiError) {
	specs := p.tagSpecs("TagSpecification")
	for rt := range specs {
		if rt != resourceType {
			return nil, badRequest("InvalidParameterValue", fmt.Sprintf("'%s' is not a valid taggable resource type for this operation.", rt))
		}
	}
	if err := checkTags(specs[resourceType]); err != nil {
		return nil, err
	}
	return copyTags(specs[resourceType]), nil
}

// checkTags applies EC2's tag restrictions
// (https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/Using_Tags.html#tag-restrictions).
func checkTags(tags map[string]string) *apiError {
	if len(tags) > 50 {
		return badRequest("TagLimitExceeded", "The maximum number of tags per resource is 50.")
	}
	for k, v := range tags {
		if len(k) > 128 || len(v) > 256 {
			return badRequest("InvalidParameterValue", "Tag keys are limited to 128 characters and values to 256.")
		}
		if strings.HasPrefix(strings.ToLower(k), "aws:") {
			return badRequest("InvalidParameterValue", "Tag keys starting with 'aws:' are reserved for internal use")
		}
	}
	return nil
}

// checkTagCount applies the 50-tags limit to a resource's tags after a CreateTags: the aws: tags AWS set
// itself (aws:ec2launchtemplate:id on a group's instance) do not count, and are not the caller's to refuse.
// https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/Using_Tags.html#tag-restrictions
func checkTagCount(tags map[string]string) *apiError {
	n := 0
	for k := range tags {
		if !strings.HasPrefix(strings.ToLower(k), "aws:") {
			n++
		}
	}
	if n > 50 {
		return badRequest("TagLimitExceeded", "The maximum number of tags per resource is 50.")
	}
	return nil
}

func copyTags(m map[string]string) map[string]string {
	if len(m) == 0 {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
