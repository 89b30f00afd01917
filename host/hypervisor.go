package host

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
)

// Whether this instance presents EBS volumes as NVMe devices, which is how handover finds a volume's
// block device (/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol..., the controller's serial). Instances
// built on the Nitro System do; the older Xen ones present EBS as /dev/xvd* without the volume ID, and a
// device wait there can only time out (https://docs.aws.amazon.com/ebs/latest/userguide/nvme-ebs-volumes.html).
//
// The facts come from sysfs (--sys-dir), as AWS documents telling the two apart
// (https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/identify_ec2_instances.html):
//   - the device side: an NVMe controller whose model is "Amazon Elastic Block Store"
//     (class/nvme/nvmeN/model). On Nitro the root volume is one, so it is there from boot;
//   - the hypervisor: hypervisor/type is "xen" on a Xen instance (Nitro has no /sys/hypervisor), and
//     devices/virtual/dmi/id/sys_vendor is "Xen" there ("Amazon EC2" on Nitro).
//
// Storage reports both; the caller refuses only when both say Xen (no EBS NVMe controller, and the
// hypervisor is Xen), so that a sysfs it cannot read (a container, a stripped-down image) is never taken
// for a Xen host.

// ebsNVMeModel is the model string of an EBS NVMe controller.
const ebsNVMeModel = "Amazon Elastic Block Store"

// Storage is what sysfs says of how this instance attaches EBS volumes.
type Storage struct {
	EBSNVMe    bool   // an NVMe controller of EBS is present
	Xen        bool   // the hypervisor is Xen
	Hypervisor string // hypervisor/type or the DMI vendor, for the message; "" when neither is readable
}

// Storage reads the facts from the sysfs directory.
func (l *Linux) Storage() (Storage, error) {
	var st Storage
	ctrls, err := os.ReadDir(filepath.Join(l.SysDir, "class", "nvme"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return st, err
	}
	for _, c := range ctrls {
		model, err := os.ReadFile(filepath.Join(l.SysDir, "class", "nvme", c.Name(), "model"))
		if err == nil && strings.TrimSpace(string(model)) == ebsNVMeModel {
			st.EBSNVMe = true
			break
		}
	}
	read := func(rel string) string {
		b, err := os.ReadFile(filepath.Join(l.SysDir, rel))
		if err != nil {
			return ""
		}
		return strings.TrimSpace(string(b))
	}
	if t := read("hypervisor/type"); t != "" {
		st.Hypervisor, st.Xen = t, strings.EqualFold(t, "xen")
	}
	if v := read("devices/virtual/dmi/id/sys_vendor"); v != "" {
		if st.Hypervisor == "" {
			st.Hypervisor = v
		}
		st.Xen = st.Xen || strings.EqualFold(v, "xen")
	}
	return st, nil
}
