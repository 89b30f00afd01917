package sim

import (
	"fmt"
	"strings"
	"time"
)

// Elastic IP addresses are handed out from the documentation ranges of
// RFC 5737, so nothing the simulator prints is a real public address.
var publicRanges = []string{"198.51.100.", "203.0.113.", "192.0.2."}

// nextPublicIP picks a free address of the simulated pool; ok is false when every one is allocated.
func (r *Region) nextPublicIP() (ip string, ok bool) {
	used := map[string]bool{}
	for _, a := range r.w.Addresses {
		used[a.PublicIP] = true
	}
	size := 254 * len(publicRanges)
	for range size {
		r.w.IPSeq++
		n := r.w.IPSeq % size
		ip := fmt.Sprintf("%s%d", publicRanges[n/254], 1+n%254)
		if !used[ip] {
			return ip, true
		}
	}
	return "", false
}

func (r *Region) findAddress(allocID string) (*address, *apiError) {
	if !validID("eipalloc", allocID) {
		return nil, badRequest("InvalidAllocationID.Malformed", fmt.Sprintf("Invalid id: \"%s\" (expecting \"eipalloc-...\")", allocID))
	}
	a := r.w.Addresses[allocID]
	if a == nil {
		return nil, allocationNotFound(allocID)
	}
	return a, nil
}

func allocationNotFound(id string) *apiError {
	return badRequest("InvalidAllocationID.NotFound", fmt.Sprintf("The allocation ID '%s' does not exist", id))
}

func (r *Region) addressByIP(ip string) (*address, *apiError) {
	for _, a := range r.w.Addresses {
		if a.PublicIP == ip {
			return a, nil
		}
	}
	return nil, badRequest("InvalidAddress.NotFound", fmt.Sprintf("Address '%s' not found.", ip))
}

func (r *Region) allocateAddress(c *reqCtx) ([]node, *apiError) {
	if d := c.p.get("Domain"); d != "" && d != "vpc" && d != "standard" {
		return nil, badRequest("InvalidParameterValue", fmt.Sprintf("Value (%s) for parameter domain is invalid.", d))
	}
	tags, aerr := c.p.specTags("elastic-ip")
	if aerr != nil {
		return nil, aerr
	}
	ip, ok := r.nextPublicIP()
	if !ok {
		// AWS's answer once the account's Elastic IP limit is reached; the sim's limit is its pool of
		// addresses (it used to search the full pool forever, holding the region's lock).
		// https://docs.aws.amazon.com/AWSEC2/latest/APIReference/errors-overview.html
		return nil, badRequest("AddressLimitExceeded", "The maximum number of addresses has been reached.")
	}
	a := &address{AllocationID: newID("eipalloc"), PublicIP: ip, Domain: "vpc", Created: c.now, Tags: tags}
	r.w.Addresses[a.AllocationID] = a
	return []node{tx("publicIp", a.PublicIP), tx("allocationId", a.AllocationID), tx("domain", a.Domain),
		tx("publicIpv4Pool", "amazon"), tx("networkBorderGroup", r.opts.Region)}, nil
}

func (r *Region) releaseAddress(c *reqCtx) ([]node, *apiError) {
	var a *address
	var aerr *apiError
	if id := c.p.get("AllocationId"); id != "" {
		a, aerr = r.lookupAddress(c, id)
	} else if ip := c.p.get("PublicIp"); ip != "" {
		a, aerr = r.addressByIP(ip)
	} else {
		aerr = badRequest("MissingParameter", "The request must contain the parameter AllocationId")
	}
	if aerr != nil {
		return nil, aerr
	}
	if a.AssociationID != "" {
		return nil, badRequest("InvalidIPAddress.InUse", "Address is in use")
	}
	delete(r.w.Addresses, a.AllocationID)
	return []node{boolean("return", true)}, nil
}

func addressField(a *address) fieldFunc {
	return func(name string) ([]string, bool) {
		switch name {
		case "domain":
			return []string{a.Domain}, true
		case "allocation-id":
			return []string{a.AllocationID}, true
		case "public-ip":
			return []string{a.PublicIP}, true
		case "association-id":
			return []string{a.AssociationID}, true
		case "instance-id":
			return []string{a.InstanceID}, true
		case "network-interface-id":
			return []string{a.ENI}, true
		case "private-ip-address":
			return []string{a.PrivateIP}, true
		case "network-interface-owner-id":
			return []string{accountID}, true
		}
		return nil, false
	}
}

func (r *Region) describeAddresses(c *reqCtx) ([]node, *apiError) {
	var addrs []*address
	ids, ips := c.p.list("AllocationId"), c.p.list("PublicIp")
	for _, id := range ids {
		a, aerr := r.findAddress(id)
		if aerr == nil && r.invisible(a.Created, c) {
			aerr = allocationNotFound(id)
		}
		if aerr != nil {
			return nil, aerr
		}
		addrs = append(addrs, a)
	}
	for _, ip := range ips {
		a, aerr := r.addressByIP(ip)
		if aerr != nil {
			return nil, badRequest("InvalidAddress.NotFound", fmt.Sprintf("Address '%s' not found.", ip))
		}
		addrs = append(addrs, a)
	}
	if len(ids) == 0 && len(ips) == 0 {
		for _, a := range r.w.Addresses {
			if !r.invisible(a.Created, c) {
				addrs = append(addrs, a)
			}
		}
	}
	sortByCreation(addrs, func(a *address) (time.Time, string) { return a.Created, a.AllocationID })
	var items []node
	for _, a := range addrs {
		a = r.addressView(a, c)
		ok, aerr := matchFilters(c.p.filters(), a.Tags, addressField(a))
		if aerr != nil {
			return nil, aerr
		}
		if !ok {
			continue
		}
		items = append(items, el("", tx("publicIp", a.PublicIP), tx("allocationId", a.AllocationID), tx("domain", a.Domain),
			opt("associationId", a.AssociationID), opt("instanceId", a.InstanceID), opt("networkInterfaceId", a.ENI),
			opt("networkInterfaceOwnerId", map[bool]string{true: accountID}[a.ENI != ""]), opt("privateIpAddress", a.PrivateIP),
			ec2TagSet(a.Tags), tx("publicIpv4Pool", "amazon"), tx("networkBorderGroup", r.opts.Region)))
	}
	return []node{list("addressesSet", "item", items)}, nil
}

// associateAddress follows the VPC rules of AssociateAddress
// (https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_AssociateAddress.html):
// an address already associated elsewhere moves only with
// AllowReassociation (else Resource.AlreadyAssociated); an instance that
// already has another address on its primary IP gets the new one instead.
func (r *Region) associateAddress(c *reqCtx) ([]node, *apiError) {
	p := c.p
	var a *address
	var aerr *apiError
	if id := p.get("AllocationId"); id != "" {
		a, aerr = r.lookupAddress(c, id)
	} else if ip := p.get("PublicIp"); ip != "" {
		a, aerr = r.addressByIP(ip)
	} else {
		aerr = badRequest("MissingParameter", "The request must contain the parameter AllocationId")
	}
	if aerr != nil {
		return nil, aerr
	}
	var in *instance
	switch {
	case p.get("InstanceId") != "":
		if in, aerr = r.lookupInstance(c, p.get("InstanceId")); aerr != nil {
			return nil, aerr
		}
	case p.get("NetworkInterfaceId") != "":
		eni := p.get("NetworkInterfaceId")
		for _, x := range r.w.Instances {
			if x.ENI == eni && x.State != "terminated" {
				in = x
			}
		}
		if in == nil {
			return nil, badRequest("InvalidNetworkInterfaceID.NotFound", fmt.Sprintf("The networkInterface ID '%s' does not exist", eni))
		}
	default:
		return nil, badRequest("MissingParameter", "Either instance ID or network interface ID must be specified")
	}
	if in.State != "running" && in.State != "stopped" {
		return nil, badRequest("IncorrectInstanceState", fmt.Sprintf("The %s instance '%s' is not in a valid state for this operation.", in.State, in.ID))
	}
	if pip := p.get("PrivateIpAddress"); pip != "" && pip != in.PrivateIP {
		return nil, badRequest("InvalidParameterValue", fmt.Sprintf("The private IP address %s is not assigned to the network interface %s", pip, in.ENI))
	}
	if a.AssociationID != "" {
		if a.InstanceID == in.ID {
			return []node{tx("associationId", a.AssociationID)}, nil
		}
		if !p.boolean("AllowReassociation") {
			return nil, badRequest("Resource.AlreadyAssociated", fmt.Sprintf("resource %s is already associated with associate-id %s", a.AllocationID, a.AssociationID))
		}
	}
	for _, o := range r.w.Addresses {
		if o != a && o.InstanceID == in.ID {
			r.noteAddressChange(o, c)
			o.AssociationID, o.InstanceID, o.ENI, o.PrivateIP = "", "", "", ""
			r.observeAddressLocked(ObserveDisassociate, o, in.ID, "", c.now)
		}
	}
	r.noteAddressChange(a, c)
	replaced := a.InstanceID
	a.AssociationID, a.InstanceID, a.ENI, a.PrivateIP = newID("eipassoc"), in.ID, in.ENI, in.PrivateIP
	r.observeAddressLocked(ObserveAssociate, a, in.ID, replaced, c.now)
	return []node{tx("associationId", a.AssociationID)}, nil
}

func (r *Region) disassociateAddress(c *reqCtx) ([]node, *apiError) {
	id := c.p.get("AssociationId")
	if id == "" {
		if ip := c.p.get("PublicIp"); ip != "" {
			a, aerr := r.addressByIP(ip)
			if aerr != nil {
				return nil, aerr
			}
			id = a.AssociationID
		}
	}
	if id == "" {
		return nil, badRequest("MissingParameter", "The request must contain the parameter AssociationId")
	}
	if !strings.HasPrefix(id, "eipassoc-") {
		return nil, badRequest("InvalidAssociationID.Malformed", fmt.Sprintf("Invalid id: \"%s\" (expecting \"eipassoc-...\")", id))
	}
	for _, a := range r.w.Addresses {
		if a.AssociationID == id {
			r.noteAddressChange(a, c)
			left := a.InstanceID
			a.AssociationID, a.InstanceID, a.ENI, a.PrivateIP = "", "", "", ""
			r.observeAddressLocked(ObserveDisassociate, a, left, "", c.now)
			return []node{boolean("return", true)}, nil
		}
	}
	return nil, badRequest("InvalidAssociationID.NotFound", fmt.Sprintf("The association ID '%s' does not exist", id))
}
