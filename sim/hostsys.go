package sim

import (
	"os"
	"path/filepath"
	"strings"
)

// An instance's sysfs (its sys directory, HANDOVER_SYS_DIR) shows the host it runs on, as AWS documents
// telling the two apart (https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/identify_ec2_instances.html):
//   - a Nitro instance: devices/virtual/dmi/id/sys_vendor "Amazon EC2", and the root volume's EBS NVMe
//     controller at class/nvme/nvme0 (model "Amazon Elastic Block Store");
//   - a Xen instance (xenFamilies): hypervisor/type "xen", sys_vendor "Xen", and no NVMe controller of EBS
//     (its EBS volumes are /dev/xvd* devices; the sim still links attached volumes as it does for every
//     instance).

// xenFamilies are the instance families built on the Xen hypervisor: those not in "Instances built on the
// AWS Nitro System" (https://docs.aws.amazon.com/ec2/latest/instancetypes/ec2-nitro-instances.html). p3dn,
// i3en and g3s's siblings on Nitro are separate families and not here.
var xenFamilies = map[string]bool{
	"t1": true, "t2": true, "m1": true, "m2": true, "m3": true, "m4": true, "c1": true, "c3": true, "c4": true,
	"cc2": true, "cr1": true, "r3": true, "r4": true, "x1": true, "x1e": true, "i2": true, "i3": true, "d2": true,
	"h1": true, "hs1": true, "g2": true, "g3": true, "g3s": true, "p2": true, "p3": true, "f1": true,
}

// xenType reports whether instances of the type run on Xen.
func xenType(instanceType string) bool {
	family, _, _ := strings.Cut(instanceType, ".")
	return xenFamilies[family]
}

// writeHostSysLocked writes the instance's host facts into its sys directory.
func (r *Region) writeHostSysLocked(in *instance) {
	files := map[string]string{
		"devices/virtual/dmi/id/sys_vendor": "Amazon EC2",
		"class/nvme/nvme0/model":            "Amazon Elastic Block Store              ", // NVMe pads the model to 40
	}
	if xenType(in.Type) {
		files = map[string]string{
			"hypervisor/type":                   "xen",
			"hypervisor/uuid":                   "ec2" + strings.ReplaceAll(strings.TrimPrefix(in.ID, "i-"), "-", "")[:5] + "-0000-0000-0000-000000000000",
			"devices/virtual/dmi/id/sys_vendor": "Xen",
		}
	}
	for rel, v := range files {
		p := r.instanceDir(in.ID, "sys", filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			r.log.Error("instance sys dir", "instance", in.ID, "err", err)
			return
		}
		if err := os.WriteFile(p, []byte(v+"\n"), 0o644); err != nil {
			r.log.Error("instance sys file", "instance", in.ID, "err", err)
		}
	}
}
