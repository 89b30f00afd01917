package sim

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// azID maps a zone name to a zone ID the way AWS names them ("use1-az1" for
// the first zone of us-east-1). AWS shuffles the name->ID mapping per
// account; the simulator uses the order of Options.AZs.
func (r *Region) azID(az string) string {
	i := slices.Index(r.opts.AZs, az)
	if i < 0 {
		return ""
	}
	parts := strings.Split(r.opts.Region, "-")
	prefix := ""
	if len(parts) == 3 && len(parts[0]) >= 2 && parts[1] != "" {
		prefix = parts[0][:2] + parts[1][:1] + parts[2]
	} else {
		prefix = strings.ReplaceAll(r.opts.Region, "-", "")
	}
	return prefix + "-az" + strconv.Itoa(i+1)
}

// subnetAZ maps a subnet id to its zone. The simulator has no VPCs: a subnet
// id ending in a zone's letter is in that zone ("subnet-a" and
// "subnet-0123a" are in us-east-1a), and "subnet-" followed by a zone name
// ("subnet-us-east-1b") is in that zone.
func (r *Region) subnetAZ(subnet string) (string, *apiError) {
	rest, ok := strings.CutPrefix(subnet, "subnet-")
	if ok && rest != "" {
		if r.validAZ(rest) {
			return rest, nil
		}
		az := r.opts.Region + rest[len(rest)-1:]
		if r.validAZ(az) {
			return az, nil
		}
	}
	return "", badRequest("InvalidSubnetID.NotFound", fmt.Sprintf("The subnet ID '%s' does not exist", subnet))
}

// subnetFor names the default subnet of a zone.
func subnetFor(az string) string { return "subnet-" + az[len(az)-1:] }

func (r *Region) describeAvailabilityZones(c *reqCtx) ([]node, *apiError) {
	names, ids := c.p.list("ZoneName"), c.p.list("ZoneId")
	var items []node
	for _, az := range r.opts.AZs {
		id := r.azID(az)
		if (len(names) > 0 || len(ids) > 0) && !slices.Contains(names, az) && !slices.Contains(ids, id) {
			continue
		}
		ok, aerr := matchFilters(c.p.filters(), nil, func(name string) ([]string, bool) {
			switch name {
			case "zone-name":
				return []string{az}, true
			case "zone-id":
				return []string{id}, true
			case "state":
				return []string{"available"}, true
			case "region-name":
				return []string{r.opts.Region}, true
			case "zone-type":
				return []string{"availability-zone"}, true
			case "opt-in-status":
				return []string{"opt-in-not-required"}, true
			case "group-name", "network-border-group":
				return []string{r.opts.Region}, true
			}
			return nil, false
		})
		if aerr != nil {
			return nil, aerr
		}
		if !ok {
			continue
		}
		items = append(items, el("", tx("zoneName", az), tx("zoneState", "available"), tx("regionName", r.opts.Region),
			tx("zoneId", id), tx("zoneType", "availability-zone"), tx("optInStatus", "opt-in-not-required"),
			tx("groupName", r.opts.Region), tx("networkBorderGroup", r.opts.Region), list("messageSet", "item", nil)))
	}
	for _, n := range names {
		if !r.validAZ(n) {
			return nil, badRequest("InvalidParameterValue", fmt.Sprintf("The zone '%s' does not exist.", n))
		}
	}
	return []node{list("availabilityZoneInfo", "item", items)}, nil
}
