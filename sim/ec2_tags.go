package sim

import (
	"fmt"
	"slices"
	"strings"
)

// taggable is any resource that carries EC2 tags.
type taggable struct {
	id, kind string
	tags     *map[string]string
}

// findTaggable resolves a resource id for CreateTags/DeleteTags, answering
// the NotFound code of its type as EC2 does.
func (r *Region) findTaggable(id string) (taggable, *apiError) {
	switch {
	case strings.HasPrefix(id, "vol-"):
		v, aerr := r.findVolume(id)
		if aerr != nil {
			return taggable{}, aerr
		}
		return taggable{id, "volume", &v.Tags}, nil
	case strings.HasPrefix(id, "snap-"):
		s, aerr := r.findSnapshot(id)
		if aerr != nil {
			return taggable{}, aerr
		}
		return taggable{id, "snapshot", &s.Tags}, nil
	case strings.HasPrefix(id, "i-"):
		in, aerr := r.findInstance(id)
		if aerr != nil {
			return taggable{}, aerr
		}
		return taggable{id, "instance", &in.Tags}, nil
	case strings.HasPrefix(id, "eipalloc-"):
		a, aerr := r.findAddress(id)
		if aerr != nil {
			return taggable{}, aerr
		}
		return taggable{id, "elastic-ip", &a.Tags}, nil
	case strings.HasPrefix(id, "lt-"):
		lt, aerr := r.findTemplate(id, "")
		if aerr != nil {
			return taggable{}, aerr
		}
		return taggable{id, "launch-template", &lt.Tags}, nil
	}
	return taggable{}, badRequest("InvalidID", fmt.Sprintf("The ID '%s' is not valid", id))
}

func (r *Region) allTaggables() []taggable {
	var out []taggable
	for _, v := range r.w.Volumes {
		out = append(out, taggable{v.ID, "volume", &v.Tags})
	}
	for _, s := range r.w.Snapshots {
		out = append(out, taggable{s.ID, "snapshot", &s.Tags})
	}
	for _, in := range r.w.Instances {
		out = append(out, taggable{in.ID, "instance", &in.Tags})
	}
	for _, a := range r.w.Addresses {
		out = append(out, taggable{a.AllocationID, "elastic-ip", &a.Tags})
	}
	for _, lt := range r.w.Templates {
		out = append(out, taggable{lt.ID, "launch-template", &lt.Tags})
	}
	slices.SortFunc(out, func(a, b taggable) int { return strings.Compare(a.id, b.id) })
	return out
}

func (r *Region) createTags(c *reqCtx) ([]node, *apiError) {
	ids := c.p.list("ResourceId")
	if len(ids) == 0 {
		return nil, badRequest("MissingParameter", "The request must contain the parameter resourceIdSet")
	}
	tags := c.p.tags("Tag")
	if err := checkTags(tags); err != nil {
		return nil, err
	}
	var targets []taggable
	for _, id := range ids {
		t, aerr := r.findTaggable(id)
		if aerr != nil {
			return nil, aerr
		}
		merged := copyTags(*t.tags)
		if merged == nil {
			merged = map[string]string{}
		}
		for k, v := range tags {
			merged[k] = v
		}
		if err := checkTagCount(merged); err != nil {
			return nil, err
		}
		targets = append(targets, t)
	}
	for _, t := range targets {
		if *t.tags == nil {
			*t.tags = map[string]string{}
		}
		for k, v := range tags {
			(*t.tags)[k] = v
		}
	}
	return []node{boolean("return", true)}, nil
}

// deleteTags removes keys; with a Value, only when the value matches.
func (r *Region) deleteTags(c *reqCtx) ([]node, *apiError) {
	ids := c.p.list("ResourceId")
	if len(ids) == 0 {
		return nil, badRequest("MissingParameter", "The request must contain the parameter resourceIdSet")
	}
	type del struct {
		key, value string
		hasValue   bool
	}
	var dels []del
	for _, n := range c.p.indexes("Tag") {
		pre := fmt.Sprintf("Tag.%d", n)
		dels = append(dels, del{c.p.get(pre + ".Key"), c.p.get(pre + ".Value"), c.p.has(pre + ".Value")})
	}
	for _, id := range ids {
		t, aerr := r.findTaggable(id)
		if aerr != nil {
			return nil, aerr
		}
		if len(dels) == 0 {
			*t.tags = nil
			continue
		}
		for _, d := range dels {
			if v, ok := (*t.tags)[d.key]; ok && (!d.hasValue || v == d.value) {
				delete(*t.tags, d.key)
			}
		}
	}
	return []node{boolean("return", true)}, nil
}

func (r *Region) describeTags(c *reqCtx) ([]node, *apiError) {
	type row struct{ id, kind, key, value string }
	var rows []row
	for _, t := range r.allTaggables() {
		for _, k := range sortedKeys(*t.tags) {
			x := row{t.id, t.kind, k, (*t.tags)[k]}
			ok, aerr := matchFilters(c.p.filters(), map[string]string{x.key: x.value}, func(name string) ([]string, bool) {
				switch name {
				case "resource-id":
					return []string{x.id}, true
				case "resource-type":
					return []string{x.kind}, true
				case "key":
					return []string{x.key}, true
				case "value":
					return []string{x.value}, true
				}
				return nil, false
			})
			if aerr != nil {
				return nil, aerr
			}
			if ok {
				rows = append(rows, x)
			}
		}
	}
	pg, next, aerr := page(c.p, rows, 5, 1000)
	if aerr != nil {
		return nil, aerr
	}
	var items []node
	for _, x := range pg {
		items = append(items, el("", tx("resourceId", x.id), tx("resourceType", x.kind), tx("key", x.key), tx("value", x.value)))
	}
	return []node{list("tagSet", "item", items), opt("nextToken", next)}, nil
}
