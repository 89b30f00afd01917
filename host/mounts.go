package host

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Mount is one line of /proc/self/mountinfo.
type Mount struct {
	Major, Minor uint32
	MountPoint   string
	FSType       string
	Source       string
}

// mountInfoPath is the calling process's mount table.
const mountInfoPath = "/proc/self/mountinfo"

// MountsOf returns where the block device at devPath is mounted, in mount order. It matches on the
// device number, not on names: the same NVMe device appears as /dev/nvme1n1, a by-id link and, on Xen,
// /dev/xvdf, and mountinfo shows whichever name mount was given.
func (l *Linux) MountsOf(devPath string) ([]Mount, error) {
	var st unix.Stat_t
	if err := unix.Stat(devPath, &st); err != nil {
		return nil, fmt.Errorf("stat device %s: %w", devPath, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFBLK {
		return nil, fmt.Errorf("%s is not a block device", devPath)
	}
	all, err := readMountInfo(l.mountInfo())
	if err != nil {
		return nil, err
	}
	major, minor := unix.Major(st.Rdev), unix.Minor(st.Rdev)
	var out []Mount
	for _, m := range all {
		if m.Major == major && m.Minor == minor {
			out = append(out, m)
		}
	}
	return out, nil
}

// MountedAt returns the entry mounted at dir (the last one, which is what a path lookup sees), if any.
func (l *Linux) MountedAt(dir string) (Mount, bool, error) {
	all, err := readMountInfo(l.mountInfo())
	if err != nil {
		return Mount{}, false, err
	}
	dir = filepath.Clean(dir)
	for i := len(all) - 1; i >= 0; i-- {
		if all[i].MountPoint == dir {
			return all[i], true, nil
		}
	}
	return Mount{}, false, nil
}

// readMountInfo parses a mountinfo file (proc(5)):
// "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue".
func readMountInfo(path string) ([]Mount, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read mount table: %w", err)
	}
	return ParseMountInfo(b)
}

func ParseMountInfo(b []byte) ([]Mount, error) {
	var out []Mount
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	for sc.Scan() {
		// Fields are separated by single spaces; the kernel escapes space, tab, newline and backslash in
		// paths but writes any other byte as it is, a carriage return or a no-break space included, which
		// strings.Fields would take for a separator.
		fields := strings.FieldsFunc(sc.Text(), func(r rune) bool { return r == ' ' })
		if len(fields) < 10 {
			continue
		}
		majMin := strings.SplitN(fields[2], ":", 2)
		if len(majMin) != 2 {
			return nil, fmt.Errorf("mountinfo: bad device field %q", fields[2])
		}
		major, err1 := strconv.ParseUint(majMin[0], 10, 32)
		minor, err2 := strconv.ParseUint(majMin[1], 10, 32)
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("mountinfo: bad device field %q", fields[2])
		}
		// Optional fields end at the "-" separator; then fstype and source.
		sep := -1
		for i := 6; i < len(fields); i++ {
			if fields[i] == "-" {
				sep = i
				break
			}
		}
		if sep < 0 || sep+2 >= len(fields) {
			return nil, fmt.Errorf("mountinfo: no separator in %q", sc.Text())
		}
		out = append(out, Mount{
			Major: uint32(major), Minor: uint32(minor),
			MountPoint: unescapeMountInfo(fields[4]),
			FSType:     fields[sep+1],
			Source:     unescapeMountInfo(fields[sep+2]),
		})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("mountinfo: %w", err)
	}
	return out, nil
}

// unescapeMountInfo undoes the kernel's octal escapes of space, tab, newline and backslash (\040 ...).
func unescapeMountInfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// Mounts returns the whole mount table, in mount order.
func (l *Linux) Mounts() ([]Mount, error) { return readMountInfo(l.mountInfo()) }
