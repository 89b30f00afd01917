package sim

import (
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

func TestElasticIPRules(t *testing.T) {
	t.Parallel()
	r := startRegion(t, Options{})
	c := ec2Client(r)
	ctx := ctxT(t)
	a, err := c.AllocateAddress(ctx, &ec2.AllocateAddressInput{Domain: ec2types.DomainTypeVpc,
		TagSpecifications: []ec2types.TagSpecification{{ResourceType: ec2types.ResourceTypeElasticIp, Tags: toTags(map[string]string{"handover:group": "web"})}}})
	if err != nil {
		t.Fatal(err)
	}
	i1 := runInstance(t, r, "us-east-1a", nil)
	i2 := runInstance(t, r, "us-east-1b", nil)
	idle(t, r)
	as1, err := c.AssociateAddress(ctx, &ec2.AssociateAddressInput{AllocationId: a.AllocationId, InstanceId: aws.String(i1)})
	if err != nil {
		t.Fatal(err)
	}
	if pub := instanceState(t, r, i1).PublicIpAddress; pub == nil || *pub != *a.PublicIp {
		t.Fatalf("instance public ip %v", pub)
	}
	_, err = c.AssociateAddress(ctx, &ec2.AssociateAddressInput{AllocationId: a.AllocationId, InstanceId: aws.String(i2)})
	wantCode(t, err, "Resource.AlreadyAssociated")
	as2, err := c.AssociateAddress(ctx, &ec2.AssociateAddressInput{AllocationId: a.AllocationId, InstanceId: aws.String(i2), AllowReassociation: aws.Bool(true)})
	if err != nil {
		t.Fatal(err)
	}
	out, err := c.DescribeAddresses(ctx, &ec2.DescribeAddressesInput{Filters: []ec2types.Filter{{Name: aws.String("tag:handover:group"), Values: []string{"web"}}}})
	if err != nil || len(out.Addresses) != 1 || *out.Addresses[0].InstanceId != i2 || *out.Addresses[0].AssociationId != *as2.AssociationId {
		t.Fatalf("describe: %+v %v", out, err)
	}
	_, err = c.DisassociateAddress(ctx, &ec2.DisassociateAddressInput{AssociationId: as1.AssociationId})
	wantCode(t, err, "InvalidAssociationID.NotFound")
	_, err = c.ReleaseAddress(ctx, &ec2.ReleaseAddressInput{AllocationId: a.AllocationId})
	wantCode(t, err, "InvalidIPAddress.InUse")
	if _, err := c.DisassociateAddress(ctx, &ec2.DisassociateAddressInput{AssociationId: as2.AssociationId}); err != nil {
		t.Fatal(err)
	}
	// By network interface and private IP too.
	in2 := instanceState(t, r, i2)
	if _, err := c.AssociateAddress(ctx, &ec2.AssociateAddressInput{AllocationId: a.AllocationId,
		NetworkInterfaceId: in2.NetworkInterfaces[0].NetworkInterfaceId, PrivateIpAddress: in2.PrivateIpAddress}); err != nil {
		t.Fatal(err)
	}
	_, err = c.DescribeAddresses(ctx, &ec2.DescribeAddressesInput{AllocationIds: []string{"eipalloc-0123456789abcdef0"}})
	wantCode(t, err, "InvalidAllocationID.NotFound")
	_, err = c.AssociateAddress(ctx, &ec2.AssociateAddressInput{AllocationId: aws.String("eipalloc-0123456789abcdef0"), InstanceId: aws.String(i1)})
	wantCode(t, err, "InvalidAllocationID.NotFound")
	// Terminating the instance frees the address.
	if _, err := c.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{i2}}); err != nil {
		t.Fatal(err)
	}
	idle(t, r)
	out, err = c.DescribeAddresses(ctx, &ec2.DescribeAddressesInput{AllocationIds: []string{*a.AllocationId}})
	if err != nil || out.Addresses[0].AssociationId != nil {
		t.Fatalf("address after terminate: %+v %v", out, err)
	}
	if _, err := c.ReleaseAddress(ctx, &ec2.ReleaseAddressInput{AllocationId: a.AllocationId}); err != nil {
		t.Fatal(err)
	}
}

func TestTags(t *testing.T) {
	t.Parallel()
	r := startRegion(t, Options{})
	c := ec2Client(r)
	ctx := ctxT(t)
	vol := createVolume(t, r, "us-east-1a", 1, nil)
	if _, err := c.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{vol}, Tags: toTags(map[string]string{"a": "1", "b": "2"})}); err != nil {
		t.Fatal(err)
	}
	_, err := c.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{"vol-0123456789abcdef0"}, Tags: toTags(map[string]string{"a": "1"})})
	wantCode(t, err, "InvalidVolume.NotFound")
	if _, err := c.DeleteTags(ctx, &ec2.DeleteTagsInput{Resources: []string{vol}, Tags: []ec2types.Tag{{Key: aws.String("a"), Value: aws.String("other")}}}); err != nil {
		t.Fatal(err)
	}
	out, err := c.DescribeTags(ctx, &ec2.DescribeTagsInput{Filters: []ec2types.Filter{{Name: aws.String("resource-id"), Values: []string{vol}}}})
	if err != nil || len(out.Tags) != 2 {
		t.Fatalf("tags after non-matching delete: %+v %v", out, err)
	}
	if _, err := c.DeleteTags(ctx, &ec2.DeleteTagsInput{Resources: []string{vol}, Tags: []ec2types.Tag{{Key: aws.String("a")}}}); err != nil {
		t.Fatal(err)
	}
	out, err = c.DescribeTags(ctx, &ec2.DescribeTagsInput{Filters: []ec2types.Filter{
		{Name: aws.String("resource-type"), Values: []string{"volume"}}, {Name: aws.String("key"), Values: []string{"b"}}}})
	if err != nil || len(out.Tags) != 1 || *out.Tags[0].Value != "2" || out.Tags[0].ResourceType != ec2types.ResourceTypeVolume {
		t.Fatalf("describe tags: %+v %v", out, err)
	}
	_, err = c.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{vol}, Tags: toTags(map[string]string{"aws:x": "1"})})
	wantCode(t, err, "InvalidParameterValue")
}

// TestAllocateAddressPoolExhausted: once every address of the simulated pool is allocated, AllocateAddress
// answers AddressLimitExceeded as AWS does at the account's limit, and one released is handed out again.
// (It used to search the pool forever under the region's lock, hanging every client: FuzzServeAPI found it.)
func TestAllocateAddressPoolExhausted(t *testing.T) {
	r := startRegion(t, Options{})
	c := ec2Client(r)
	var last string
	for i := 0; i < 254*len(publicRanges); i++ {
		out, err := c.AllocateAddress(ctxT(t), &ec2.AllocateAddressInput{})
		if err != nil {
			t.Fatalf("allocation %d: %v", i+1, err)
		}
		last = aws.ToString(out.AllocationId)
	}
	_, err := c.AllocateAddress(ctxT(t), &ec2.AllocateAddressInput{})
	wantCode(t, err, "AddressLimitExceeded")
	if _, err := c.ReleaseAddress(ctxT(t), &ec2.ReleaseAddressInput{AllocationId: aws.String(last)}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.AllocateAddress(ctxT(t), &ec2.AllocateAddressInput{}); err != nil {
		t.Fatalf("after a release: %v", err)
	}
}
