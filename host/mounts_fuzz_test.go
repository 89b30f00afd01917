package host

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
)

var fsTypeRE = regexp.MustCompile(`^[a-z0-9._]+$`)

// escapeMountInfo escapes a path as the kernel writes it in /proc/self/mountinfo: space, tab, newline and
// backslash as \NNN octal (fs/proc_namespace.c, mangle).
func escapeMountInfo(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case ' ', '\t', '\n', '\\':
			fmt.Fprintf(&b, `\%03o`, c)
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// FuzzParseMountInfo: a mount table line the kernel writes, for any mount point and source, parses back to
// that mount point and source (handover decides from it whether a volume is mounted, and where); any other
// input is parsed or refused without a panic.
// Run with `go test -run '^$' -fuzz '^FuzzParseMountInfo$' -fuzztime 60s ./host/`.
func FuzzParseMountInfo(f *testing.F) {
	f.Add("/data", "/dev/nvme1n1", "ext4", []byte("36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n"))
	f.Add("/srv/with space", `/dev/odd\name`, "xfs", []byte("x\n1 2 3:4 / /a rw - - ext4 /dev/x rw\n"))
	f.Add("/a\nb", "src", "tmpfs", []byte("1 2 3 4 5 6 7 8 9 10"))
	f.Fuzz(func(t *testing.T, mountPoint, source, fsType string, raw []byte) {
		_, _ = ParseMountInfo(raw) // must not panic
		if mountPoint == "" || source == "" || strings.Contains(mountPoint+source, "\x00") || !fsTypeRE.MatchString(fsType) {
			return // no path holds a NUL; filesystem types are plain words
		}
		line := fmt.Sprintf("36 35 259:1 / %s rw,noatime shared:1 - %s %s rw\n", escapeMountInfo(mountPoint), fsType, escapeMountInfo(source))
		mounts, err := ParseMountInfo([]byte(line))
		if err != nil || len(mounts) != 1 {
			t.Fatalf("%q: %v, %d mounts", line, err, len(mounts))
		}
		m := mounts[0]
		if m.MountPoint != mountPoint || m.Source != source || m.FSType != fsType || m.Major != 259 || m.Minor != 1 {
			t.Fatalf("%q parses as %+v", line, m)
		}
	})
}
