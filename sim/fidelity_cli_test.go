package sim

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/handover/handover/sim/simtest"
)

// Volume IDs, instance IDs etc. that exist nowhere (valid shape).
const (
	missingVolume   = "vol-0123456789abcdef0"
	missingInstance = "i-0123456789abcdef0"
	missingSnapshot = "snap-0123456789abcdef0"
)

// cliScenario drives one target through the AWS CLI and returns what both
// targets model. Checks guarded by caps run only where the target models
// them and are not recorded in the outcome.
func cliScenario(t *testing.T, endpoint string, caps capabilities) *outcome {
	aws := newAWSCLI(t, endpoint)
	o := &outcome{}
	const azA, azB = "us-east-1a", "us-east-1b"

	// Zones.
	zones := aws.ok("ec2", "describe-availability-zones", "--filters", "Name=zone-name,Values="+azA+","+azB)
	o.rec("zones", idsOf(jlist(zones, "AvailabilityZones"), "ZoneName"))
	if got := idsOf(jlist(zones, "AvailabilityZones"), "ZoneName"); !slices.Equal(got, []string{azA, azB}) {
		t.Fatalf("describe-availability-zones: want %s and %s, got %v", azA, azB, got)
	}

	// Instances in two zones, with tags and metadata options.
	run := func(az, name string) string {
		out := aws.ok("ec2", "run-instances", "--image-id", "ami-12345678", "--instance-type", "t3.micro", "--count", "1",
			"--placement", "AvailabilityZone="+az,
			"--metadata-options", "HttpTokens=required,InstanceMetadataTags=enabled",
			"--tag-specifications", "ResourceType=instance,Tags=[{Key=Name,Value="+name+"},{Key=fidelity,Value=yes}]")
		in := jget(out, "Instances", 0)
		id := jstr(in, "InstanceId")
		if !strings.HasPrefix(id, "i-") {
			t.Fatalf("run-instances: no instance id in %v", out)
		}
		if st := jstr(in, "State", "Name"); st != "pending" {
			t.Errorf("run-instances %s: state %q, want pending", az, st)
		}
		o.rec("run-instances "+name, map[string]any{
			"id": id, "state": jstr(in, "State", "Name"), "az": jstr(in, "Placement", "AvailabilityZone"),
			"type": jstr(in, "InstanceType"), "image": jstr(in, "ImageId"),
			"httpTokens":   jstr(in, "MetadataOptions", "HttpTokens"),
			"metadataTags": jstr(in, "MetadataOptions", "InstanceMetadataTags"),
			"tags":         tagMap(jget(in, "Tags"), false),
		})
		return id
	}
	instA, instB := run(azA, "fid-a"), run(azB, "fid-b")
	simtest.Eventually(t, fidelityBound, "both instances running", func() (bool, string) {
		out := aws.ok("ec2", "describe-instances", "--instance-ids", instA, instB)
		ins := instancesOf(out)
		return len(ins) == 2 && jstr(ins[0], "State", "Name") == "running" && jstr(ins[1], "State", "Name") == "running", fmt.Sprintf("instances %v", ins)
	})
	// Filters on instances.
	byTag := instancesOf(aws.ok("ec2", "describe-instances", "--filters", "Name=tag:fidelity,Values=yes"))
	o.rec("describe-instances tag:fidelity", len(byTag))
	if got := idsOf(byTag, "InstanceId"); !slices.Equal(got, sorted(instA, instB)) {
		t.Errorf("describe-instances tag:fidelity=yes: got %v, want %s %s", got, instA, instB)
	}
	inB := instancesOf(aws.ok("ec2", "describe-instances", "--filters", "Name=tag:Name,Values=fid-b", "Name=tag-key,Values=fidelity"))
	o.rec("describe-instances tag:Name,tag-key", idsOf(inB, "InstanceId"))
	if got := idsOf(inB, "InstanceId"); !slices.Equal(got, []string{instB}) {
		t.Errorf("describe-instances tag:Name=fid-b,tag-key=fidelity: got %v, want [%s]", got, instB)
	}
	if caps.instanceAZFilter {
		inB = instancesOf(aws.ok("ec2", "describe-instances", "--filters", "Name=availability-zone,Values="+azB, "Name=tag-key,Values=fidelity"))
		if got := idsOf(inB, "InstanceId"); !slices.Equal(got, []string{instB}) {
			t.Errorf("describe-instances availability-zone=%s,tag-key=fidelity: got %v, want [%s]", azB, got, instB)
		}
	}
	one := instancesOf(aws.ok("ec2", "describe-instances", "--filters", "Name=instance-id,Values="+instA))
	if len(one) != 1 || jstr(one[0], "InstanceId") != instA || tagMap(jget(one[0], "Tags"), false)["Name"] != "fid-a" {
		t.Errorf("describe-instances instance-id=%s: got %v", instA, one)
	}
	o.rec("describe-instances instance-id", map[string]any{
		"id": jstr(one[0], "InstanceId"), "state": jstr(one[0], "State", "Name"), "code": jnum(one[0], "State", "Code"),
		"az": jstr(one[0], "Placement", "AvailabilityZone"), "tags": tagMap(jget(one[0], "Tags"), false),
	})

	// Elastic IP: allocate with tags, tag again, associate, disassociate.
	addr := aws.ok("ec2", "allocate-address", "--domain", "vpc",
		"--tag-specifications", "ResourceType=elastic-ip,Tags=[{Key=fidelity,Value=yes}]")
	alloc := jstr(addr, "AllocationId")
	if !strings.HasPrefix(alloc, "eipalloc-") || jstr(addr, "PublicIp") == "" || jstr(addr, "Domain") != "vpc" {
		t.Fatalf("allocate-address: got %v", addr)
	}
	aws.ok("ec2", "create-tags", "--resources", alloc, "--tags", "Key=Name,Value=fid-eip")
	addrs := jlist(aws.ok("ec2", "describe-addresses", "--filters", "Name=tag:fidelity,Values=yes", "Name=domain,Values=vpc"), "Addresses")
	if len(addrs) != 1 || jstr(addrs[0], "AllocationId") != alloc || tagMap(jget(addrs[0], "Tags"), false)["Name"] != "fid-eip" {
		t.Errorf("describe-addresses tag:fidelity,domain=vpc: got %v", addrs)
	}
	o.rec("describe-addresses tagged", addressView(addrs))
	assoc := aws.ok("ec2", "associate-address", "--allocation-id", alloc, "--instance-id", instA)
	assocID := jstr(assoc, "AssociationId")
	if !strings.HasPrefix(assocID, "eipassoc-") {
		t.Fatalf("associate-address: got %v", assoc)
	}
	addrs = jlist(aws.ok("ec2", "describe-addresses", "--filters", "Name=instance-id,Values="+instA), "Addresses")
	o.rec("describe-addresses instance-id", addressView(addrs))
	if len(addrs) != 1 || jstr(addrs[0], "AssociationId") != assocID || jstr(addrs[0], "InstanceId") != instA {
		t.Errorf("describe-addresses instance-id=%s after associate: got %v", instA, addrs)
	}
	pub := jstr(instancesOf(aws.ok("ec2", "describe-instances", "--instance-ids", instA))[0], "PublicIpAddress")
	if pub != jstr(addr, "PublicIp") {
		t.Errorf("describe-instances %s: PublicIpAddress %q, want the Elastic IP %q", instA, pub, jstr(addr, "PublicIp"))
	}
	aws.ok("ec2", "disassociate-address", "--association-id", assocID)
	addrs = jlist(aws.ok("ec2", "describe-addresses", "--allocation-ids", alloc), "Addresses")
	o.rec("describe-addresses after disassociate", addressView(addrs))
	if len(addrs) != 1 || jstr(addrs[0], "AssociationId") != "" || jstr(addrs[0], "InstanceId") != "" {
		t.Errorf("describe-addresses after disassociate: got %v", addrs)
	}

	// Volumes: gp3 with IOPS and throughput, encrypted, client token, tags.
	createArgs := []string{"ec2", "create-volume", "--availability-zone", azA, "--size", "2", "--volume-type", "gp3",
		"--iops", "4000", "--throughput", "250", "--encrypted", "--client-token", "fidelity-data-1",
		"--tag-specifications", "ResourceType=volume,Tags=[{Key=fidelity,Value=yes},{Key=role,Value=data}]"}
	vol := aws.ok(createArgs...)
	data := jstr(vol, "VolumeId")
	if !strings.HasPrefix(data, "vol-") {
		t.Fatalf("create-volume: got %v", vol)
	}
	o.rec("create-volume gp3", volumeView(vol, false))
	if caps.transitions && jstr(vol, "State") != "creating" {
		t.Errorf("create-volume: state %q, want creating", jstr(vol, "State"))
	}
	if caps.clientToken {
		again := aws.ok(createArgs...)
		if jstr(again, "VolumeId") != data {
			t.Errorf("create-volume with the same client token: got %s, want %s", jstr(again, "VolumeId"), data)
		}
		mismatch := slices.Clone(createArgs)
		mismatch[5] = "3" // --size
		aws.fails("IdempotentParameterMismatch", mismatch...)
	}
	waitVolume(t, aws, data, "available")
	vols := jlist(aws.ok("ec2", "describe-volumes", "--filters", "Name=tag:role,Values=data", "Name=status,Values=available",
		"Name=availability-zone,Values="+azA), "Volumes")
	if len(vols) != 1 || jstr(vols[0], "VolumeId") != data {
		t.Errorf("describe-volumes tag:role=data,status=available,availability-zone=%s: got %v", azA, vols)
	}
	o.rec("describe-volumes filtered", volumeViews(vols))
	if v := jget(aws.ok("ec2", "describe-volumes", "--filters", "Name=volume-id,Values="+data, "Name=tag-key,Values=role"), "Volumes", 0); jstr(v, "VolumeId") != data ||
		jnum(v, "Iops") != 4000 || jnum(v, "Throughput") != 250 || jget(v, "Encrypted") != true || jstr(v, "VolumeType") != "gp3" {
		t.Errorf("describe-volumes volume-id=%s: got %v", data, v)
	}

	// Attach, check the attachment filters, error cases.
	att := aws.ok("ec2", "attach-volume", "--volume-id", data, "--instance-id", instA, "--device", "/dev/sdf")
	o.rec("attach-volume", map[string]any{"state": jstr(att, "State"), "device": jstr(att, "Device"), "instance": jstr(att, "InstanceId"), "volume": jstr(att, "VolumeId")})
	if jstr(att, "State") != "attaching" {
		t.Errorf("attach-volume: state %q, want attaching", jstr(att, "State"))
	}
	waitAttachment(t, aws, data, "attached")
	vols = jlist(aws.ok("ec2", "describe-volumes", "--filters", "Name=attachment.instance-id,Values="+instA, "Name=tag-key,Values=fidelity"), "Volumes")
	o.rec("describe-volumes attachment.instance-id", volumeViews(vols))
	if len(vols) != 1 || jstr(vols[0], "VolumeId") != data || jstr(vols[0], "State") != "in-use" {
		t.Errorf("describe-volumes attachment.instance-id=%s: got %v", instA, vols)
	}
	aws.fails("VolumeInUse", "ec2", "delete-volume", "--volume-id", data)
	aws.fails("InvalidVolume.NotFound", "ec2", "describe-volumes", "--volume-ids", missingVolume)
	aws.fails("InvalidInstanceID.NotFound", "ec2", "describe-instances", "--instance-ids", missingInstance)
	aws.fails("InvalidSnapshot.NotFound", "ec2", "describe-snapshots", "--snapshot-ids", missingSnapshot)
	aws.fails("InvalidVolume.NotFound", "ec2", "attach-volume", "--volume-id", missingVolume, "--instance-id", instA, "--device", "/dev/sdh")
	if caps.azRules {
		other := jstr(aws.ok("ec2", "create-volume", "--availability-zone", azB, "--size", "1", "--volume-type", "gp3",
			"--tag-specifications", "ResourceType=volume,Tags=[{Key=role,Value=elsewhere}]"), "VolumeId")
		waitVolume(t, aws, other, "available")
		aws.fails("InvalidVolume.ZoneMismatch", "ec2", "attach-volume", "--volume-id", other, "--instance-id", instA, "--device", "/dev/sdg")
		aws.fails("VolumeInUse", "ec2", "attach-volume", "--volume-id", data, "--instance-id", instA, "--device", "/dev/sdg")
		aws.ok("ec2", "delete-volume", "--volume-id", other)
	}

	// Snapshot and wait for completed.
	snap := aws.ok("ec2", "create-snapshot", "--volume-id", data, "--description", "fidelity",
		"--tag-specifications", "ResourceType=snapshot,Tags=[{Key=fidelity,Value=yes}]")
	snapID := jstr(snap, "SnapshotId")
	if !strings.HasPrefix(snapID, "snap-") || jstr(snap, "VolumeId") != data {
		t.Fatalf("create-snapshot: got %v", snap)
	}
	if caps.transitions && jstr(snap, "State") != "pending" {
		t.Errorf("create-snapshot: state %q, want pending", jstr(snap, "State"))
	}
	var done any
	simtest.Eventually(t, fidelityBound, "snapshot completed", func() (bool, string) {
		done = jget(aws.ok("ec2", "describe-snapshots", "--snapshot-ids", snapID), "Snapshots", 0)
		return jstr(done, "State") == "completed", fmt.Sprintf("snapshot %v", done)
	})
	o.rec("snapshot completed", map[string]any{
		"volume": jstr(done, "VolumeId"), "state": jstr(done, "State"), "progress": jstr(done, "Progress"),
		"size": jnum(done, "VolumeSize"), "encrypted": jget(done, "Encrypted"), "description": jstr(done, "Description"),
		"tags": tagMap(jget(done, "Tags"), false),
	})
	if jstr(done, "Progress") != "100%" || jget(done, "Encrypted") != true || jnum(done, "VolumeSize") != 2 {
		t.Errorf("describe-snapshots %s: got %v", snapID, done)
	}
	snaps := jlist(aws.ok("ec2", "describe-snapshots", "--owner-ids", "self", "--filters", "Name=volume-id,Values="+data, "Name=status,Values=completed", "Name=tag:fidelity,Values=yes"), "Snapshots")
	o.rec("describe-snapshots filtered", idsOf(snaps, "SnapshotId"))
	if got := idsOf(snaps, "SnapshotId"); !slices.Equal(got, []string{snapID}) {
		t.Errorf("describe-snapshots volume-id,status,tag: got %v, want [%s]", got, snapID)
	}

	// Detach (with and without --instance-id is covered by unit tests; here the CLI shape).
	det := aws.ok("ec2", "detach-volume", "--volume-id", data, "--instance-id", instA)
	o.rec("detach-volume", map[string]any{"state": jstr(det, "State"), "instance": jstr(det, "InstanceId"), "volume": jstr(det, "VolumeId")})
	if jstr(det, "State") != "detaching" {
		t.Errorf("detach-volume: state %q, want detaching", jstr(det, "State"))
	}
	waitVolume(t, aws, data, "available")

	// Restore in the other zone and attach to the instance there.
	rest := aws.ok("ec2", "create-volume", "--availability-zone", azB, "--snapshot-id", snapID, "--volume-type", "gp3",
		"--tag-specifications", "ResourceType=volume,Tags=[{Key=fidelity,Value=yes},{Key=role,Value=restored}]")
	restored := jstr(rest, "VolumeId")
	restView := volumeView(rest, false)
	if caps.gp3Defaults && (jnum(rest, "Throughput") != 125 || jnum(rest, "Iops") != 3000 || jstr(rest, "KmsKeyId") == "") {
		t.Errorf("create-volume gp3 from an encrypted snapshot: want 3000 IOPS, 125 MiB/s and a KMS key id, got %v", rest)
	}
	// moto leaves a restored encrypted volume without KmsKeyId and a gp3
	// volume created without --throughput without the 125 MiB/s default.
	delete(restView, "kms")
	delete(restView, "throughput")
	o.rec("create-volume from snapshot", restView)
	waitVolume(t, aws, restored, "available")
	rv := jget(aws.ok("ec2", "describe-volumes", "--volume-ids", restored), "Volumes", 0)
	if jstr(rv, "SnapshotId") != snapID || jstr(rv, "AvailabilityZone") != azB || jnum(rv, "Size") != 2 || jget(rv, "Encrypted") != true {
		t.Errorf("restored volume: want snapshot %s, zone %s, 2 GiB, encrypted; got %v", snapID, azB, rv)
	}
	aws.ok("ec2", "attach-volume", "--volume-id", restored, "--instance-id", instB, "--device", "/dev/sdf")
	waitAttachment(t, aws, restored, "attached")
	bdm := jlist(instancesOf(aws.ok("ec2", "describe-instances", "--instance-ids", instB))[0], "BlockDeviceMappings")
	found := false
	for _, m := range bdm {
		if jstr(m, "Ebs", "VolumeId") == restored && jstr(m, "DeviceName") == "/dev/sdf" && jstr(m, "Ebs", "Status") == "attached" {
			found = true
		}
	}
	if !found {
		t.Errorf("describe-instances %s: block device mappings %v lack %s on /dev/sdf", instB, bdm, restored)
	}
	tags := jlist(aws.ok("ec2", "describe-tags", "--filters", "Name=resource-id,Values="+restored), "Tags")
	o.rec("describe-tags resource-id", tagRows(tags))
	if len(tags) != 2 {
		t.Errorf("describe-tags resource-id=%s: got %v", restored, tags)
	}

	// Pagination: 6 volumes, pages of 5 (EC2's minimum for DescribeVolumes).
	var batch []string
	for i := range 6 {
		batch = append(batch, jstr(aws.ok("ec2", "create-volume", "--availability-zone", azA, "--size", "1", "--volume-type", "gp3",
			"--tag-specifications", fmt.Sprintf("ResourceType=volume,Tags=[{Key=batch,Value=page},{Key=n,Value=%d}]", i)), "VolumeId"))
	}
	all := jlist(aws.ok("ec2", "describe-volumes", "--filters", "Name=tag:batch,Values=page", "--page-size", "5"), "Volumes")
	o.rec("describe-volumes paged all", len(all))
	if got := idsOf(all, "VolumeId"); !slices.Equal(got, sorted(batch...)) {
		t.Errorf("describe-volumes --page-size 5 over 6 volumes: got %v, want %v", got, sorted(batch...))
	}
	first := aws.ok("ec2", "describe-volumes", "--filters", "Name=tag:batch,Values=page", "--page-size", "5", "--max-items", "4")
	tok := jstr(first, "NextToken")
	rest2 := aws.ok("ec2", "describe-volumes", "--filters", "Name=tag:batch,Values=page", "--page-size", "5", "--max-items", "4", "--starting-token", tok)
	o.rec("describe-volumes max-items", []int{len(jlist(first, "Volumes")), len(jlist(rest2, "Volumes"))})
	seen := append(idsOf(jlist(first, "Volumes"), "VolumeId"), idsOf(jlist(rest2, "Volumes"), "VolumeId")...)
	sort.Strings(seen)
	if tok == "" || len(jlist(first, "Volumes")) != 4 || !slices.Equal(seen, sorted(batch...)) || jstr(rest2, "NextToken") != "" {
		t.Errorf("describe-volumes --max-items 4 then --starting-token: first %d items (token %q), then %d items (token %q); together %v, want %v",
			len(jlist(first, "Volumes")), tok, len(jlist(rest2, "Volumes")), jstr(rest2, "NextToken"), seen, sorted(batch...))
	}

	autoScalingScenario(t, aws, caps, o)
	t.Logf("%s: %d AWS CLI commands", caps.name, aws.calls)
	return o
}

func sorted(s ...string) []string {
	out := slices.Clone(s)
	sort.Strings(out)
	return out
}

func waitVolume(t *testing.T, aws *awsCLI, id, state string) {
	t.Helper()
	simtest.Eventually(t, fidelityBound, "volume "+id+" "+state, func() (bool, string) {
		v := jget(aws.ok("ec2", "describe-volumes", "--volume-ids", id), "Volumes", 0)
		return jstr(v, "State") == state && (state != "available" || len(jlist(v, "Attachments")) == 0), fmt.Sprintf("volume %v", v)
	})
}

func waitAttachment(t *testing.T, aws *awsCLI, id, state string) {
	t.Helper()
	simtest.Eventually(t, fidelityBound, "volume "+id+" attachment "+state, func() (bool, string) {
		v := jget(aws.ok("ec2", "describe-volumes", "--volume-ids", id), "Volumes", 0)
		return jstr(v, "Attachments", 0, "State") == state, fmt.Sprintf("volume %v", v)
	})
}

func addressView(addrs []any) []any {
	var out []any
	for _, a := range addrs {
		out = append(out, map[string]any{
			"allocation": jstr(a, "AllocationId"), "association": jstr(a, "AssociationId"), "instance": jstr(a, "InstanceId"),
			"domain": jstr(a, "Domain"), "publicIp": jstr(a, "PublicIp"), "tags": tagMap(jget(a, "Tags"), false),
		})
	}
	return out
}

// volumeView keeps what both targets model of a volume. withState adds the
// state (a create response's state is a transition on the sim only).
func volumeView(v any, withState bool) map[string]any {
	m := map[string]any{
		"id": jstr(v, "VolumeId"), "az": jstr(v, "AvailabilityZone"), "size": jnum(v, "Size"), "type": jstr(v, "VolumeType"),
		"iops": jnum(v, "Iops"), "throughput": jnum(v, "Throughput"), "encrypted": jget(v, "Encrypted"),
		"snapshot": jstr(v, "SnapshotId"), "tags": tagMap(jget(v, "Tags"), false), "kms": jstr(v, "KmsKeyId") != "",
	}
	if withState {
		m["state"] = jstr(v, "State")
		var atts []any
		for _, a := range jlist(v, "Attachments") {
			atts = append(atts, map[string]any{"instance": jstr(a, "InstanceId"), "device": jstr(a, "Device"), "state": jstr(a, "State")})
		}
		m["attachments"] = atts
	}
	return m
}

func volumeViews(vols []any) []any {
	var out []any
	for _, v := range vols {
		out = append(out, volumeView(v, true))
	}
	return out
}

func tagRows(tags []any) []any {
	var out []any
	for _, t := range tags {
		out = append(out, map[string]any{"id": jstr(t, "ResourceId"), "type": jstr(t, "ResourceType"), "key": jstr(t, "Key"), "value": jstr(t, "Value")})
	}
	sort.Slice(out, func(i, j int) bool { return jstr(out[i], "key") < jstr(out[j], "key") })
	return out
}
