package host

import (
	"os"
	"path/filepath"
	"testing"
)

// TestStorageTellsNitroFromXen reads the sysfs facts of a Nitro instance, a Xen one, a Xen i3 (NVMe
// instance store, EBS still on Xen's block devices) and a sysfs with neither fact.
func TestStorageTellsNitroFromXen(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		files map[string]string
		want  Storage
	}{
		{"nitro", map[string]string{"class/nvme/nvme0/model": "Amazon Elastic Block Store              \n", "devices/virtual/dmi/id/sys_vendor": "Amazon EC2\n"},
			Storage{EBSNVMe: true, Hypervisor: "Amazon EC2"}},
		{"xen", map[string]string{"hypervisor/type": "xen\n", "devices/virtual/dmi/id/sys_vendor": "Xen\n"},
			Storage{Xen: true, Hypervisor: "xen"}},
		{"xen i3, NVMe instance store only", map[string]string{"hypervisor/type": "xen\n", "class/nvme/nvme0/model": "Amazon EC2 NVMe Instance Storage\n"},
			Storage{Xen: true, Hypervisor: "xen"}},
		{"nothing readable", nil, Storage{}},
	} {
		dir := t.TempDir()
		for rel, v := range tc.files {
			p := filepath.Join(dir, rel)
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, []byte(v), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		got, err := New(filepath.Join(dir, "dev"), dir).Storage()
		if err != nil || got != tc.want {
			t.Errorf("%s: %+v %v, want %+v", tc.name, got, err, tc.want)
		}
	}
}
