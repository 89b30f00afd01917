package sim

import (
	"fmt"
	"time"
)

// Launch templates are minimal: enough for RunInstances and Auto Scaling
// groups to launch instances (image, type, metadata options, tags).

func (r *Region) findTemplate(id, name string) (*launchTemplate, *apiError) {
	if id != "" {
		if lt := r.w.Templates[id]; lt != nil {
			return lt, nil
		}
		if !validID("lt", id) {
			return nil, badRequest("InvalidLaunchTemplateId.Malformed", fmt.Sprintf("The specified ID for the launch template (%s) is malformed.", id))
		}
		return nil, badRequest("InvalidLaunchTemplateId.NotFound", fmt.Sprintf("The specified launch template, with template ID %s, does not exist.", id))
	}
	for _, lt := range r.w.Templates {
		if lt.Name == name {
			return lt, nil
		}
	}
	return nil, badRequest("InvalidLaunchTemplateName.NotFoundException", fmt.Sprintf("The specified launch template, with template name %s, does not exist.", name))
}

func (r *Region) createLaunchTemplate(c *reqCtx) ([]node, *apiError) {
	p := c.p
	name := p.get("LaunchTemplateName")
	if name == "" {
		return nil, badRequest("MissingParameter", "The request must contain the parameter LaunchTemplateName")
	}
	for _, lt := range r.w.Templates {
		if lt.Name == name {
			return nil, badRequest("InvalidLaunchTemplateName.AlreadyExistsException", fmt.Sprintf("Launch template name already in use: %s", name))
		}
	}
	tags, aerr := p.specTags("launch-template")
	if aerr != nil {
		return nil, aerr
	}
	lt := &launchTemplate{
		ID: newID("lt"), Name: name, Created: c.now,
		ImageID: p.get("LaunchTemplateData.ImageId"), InstanceType: p.get("LaunchTemplateData.InstanceType"),
		MetadataTags: p.get("LaunchTemplateData.MetadataOptions.InstanceMetadataTags") == "enabled",
		HTTPTokens:   p.get("LaunchTemplateData.MetadataOptions.HttpTokens"),
		TagSpecs:     p.tagSpecs("LaunchTemplateData.TagSpecification"),
		Tags:         tags,
	}
	r.w.Templates[lt.ID] = lt
	return []node{el("launchTemplate", templateFields(lt)...)}, nil
}

func templateFields(lt *launchTemplate) []node {
	return []node{tx("launchTemplateId", lt.ID), tx("launchTemplateName", lt.Name), ts("createTime", lt.Created),
		tx("createdBy", "arn:aws:iam::"+accountID+":root"), num("defaultVersionNumber", 1), num("latestVersionNumber", 1),
		ec2TagSet(lt.Tags)}
}

func (r *Region) describeLaunchTemplates(c *reqCtx) ([]node, *apiError) {
	var lts []*launchTemplate
	ids, names := c.p.list("LaunchTemplateId"), c.p.list("LaunchTemplateName")
	for _, id := range ids {
		lt, aerr := r.findTemplate(id, "")
		if aerr != nil {
			return nil, aerr
		}
		lts = append(lts, lt)
	}
	for _, n := range names {
		lt, aerr := r.findTemplate("", n)
		if aerr != nil {
			return nil, aerr
		}
		lts = append(lts, lt)
	}
	if len(ids) == 0 && len(names) == 0 {
		for _, lt := range r.w.Templates {
			lts = append(lts, lt)
		}
	}
	sortByCreation(lts, func(lt *launchTemplate) (time.Time, string) { return lt.Created, lt.ID })
	var items []node
	for _, lt := range lts {
		ok, aerr := matchFilters(c.p.filters(), lt.Tags, func(name string) ([]string, bool) {
			if name == "launch-template-name" {
				return []string{lt.Name}, true
			}
			return nil, false
		})
		if aerr != nil {
			return nil, aerr
		}
		if ok {
			items = append(items, el("", templateFields(lt)...))
		}
	}
	return []node{list("launchTemplates", "item", items)}, nil
}

func (r *Region) deleteLaunchTemplate(c *reqCtx) ([]node, *apiError) {
	lt, aerr := r.findTemplate(c.p.get("LaunchTemplateId"), c.p.get("LaunchTemplateName"))
	if aerr != nil {
		return nil, aerr
	}
	delete(r.w.Templates, lt.ID)
	return []node{el("launchTemplate", templateFields(lt)...)}, nil
}
