package agent

import (
	"fmt"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/handover/handover/cloud"
)

// volumeSpec is one slot of the group's data: which volume (slot name), where it is attached (the device
// name given to AttachVolume, e.g. /dev/sdf; on Nitro the kernel names it /dev/nvmeXn1 regardless, and
// handover finds it by volume ID) and where it is mounted, with extra mount options.
type volumeSpec struct {
	Slot       string
	Device     string
	MountPoint string
	Options    string // comma-separated mount options, e.g. "noatime"
}

func (v volumeSpec) String() string {
	s := v.Slot + ":" + v.Device + ":" + v.MountPoint
	if v.Options != "" {
		s += ":" + v.Options
	}
	return s
}

// defaultVolumeSpec is the one slot a group has unless --volume says otherwise.
var defaultVolumeSpec = volumeSpec{Slot: cloud.DefaultSlot, Device: "/dev/sdf", MountPoint: "/data"}

var (
	slotNameRE   = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,31}$`)
	deviceNameRE = regexp.MustCompile(`^/dev/(sd[f-p]|xvd[f-p][a-z]?|sd[f-p][1-6]?)$`)
)

// volumeSpecs is the repeatable --volume SLOT:DEVICE:MOUNTPOINT[:options] flag.
type volumeSpecs []volumeSpec

func (vs *volumeSpecs) String() string {
	parts := make([]string, 0, len(*vs))
	for _, v := range *vs {
		parts = append(parts, v.String())
	}
	return strings.Join(parts, " ") // as setList reads it: options carry commas
}

// setList reads the specs of the environment or a tag, where the flag can be given only once: specs
// separated by white space or ';' ("data:/dev/sdf:/data:noatime,nodiratime wal:/dev/sdg:/wal"). A comma
// separates specs too where what follows it starts a new spec (SLOT:/dev/...), as older releases
// documented; any other comma belongs to the mount options.
func (vs *volumeSpecs) setList(s string) error {
	for _, field := range strings.FieldsFunc(s, func(r rune) bool { return unicode.IsSpace(r) || r == ';' }) {
		parts := strings.Split(field, ",")
		spec := parts[0]
		for _, p := range parts[1:] {
			if p == "" {
				continue // "a:/dev/sdf:/a, b:/dev/sdg:/b": the comma before the space
			}
			if specStartRE.MatchString(strings.TrimSpace(p)) {
				if err := vs.Set(spec); err != nil {
					return err
				}
				spec = strings.TrimSpace(p)
				continue
			}
			spec += "," + p
		}
		if spec = strings.TrimSpace(spec); spec != "" {
			if err := vs.Set(spec); err != nil {
				return err
			}
		}
	}
	return nil
}

// specStartRE is the start of a volume spec: a slot name, then a device path.
var specStartRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,31}:/dev/`)

// Set parses one SLOT:DEVICE:MOUNTPOINT[:options] value.
func (vs *volumeSpecs) Set(s string) error {
	parts := strings.SplitN(s, ":", 4)
	if len(parts) < 3 {
		return fmt.Errorf("%q: want SLOT:DEVICE:MOUNTPOINT[:options], e.g. data:/dev/sdf:/data", s)
	}
	v := volumeSpec{Slot: parts[0], Device: parts[1], MountPoint: parts[2]}
	if len(parts) == 4 {
		v.Options = parts[3]
	}
	if !slotNameRE.MatchString(v.Slot) {
		return fmt.Errorf("slot %q: use lower-case letters, digits, '-', '_' and '.', at most 32", v.Slot)
	}
	if !deviceNameRE.MatchString(v.Device) {
		return fmt.Errorf("device %q: use an EBS device name such as /dev/sdf .. /dev/sdp or /dev/xvdf", v.Device)
	}
	if !filepath.IsAbs(v.MountPoint) || filepath.Clean(v.MountPoint) == "/" {
		return fmt.Errorf("mount point %q: must be an absolute path other than /", v.MountPoint)
	}
	// A ".." is refused, not resolved: "/data/../etc" (from a tag, say) must not become a mount over /etc.
	if slices.Contains(strings.Split(v.MountPoint, "/"), "..") {
		return fmt.Errorf("mount point %q: give the path without '..'", v.MountPoint)
	}
	v.MountPoint = filepath.Clean(v.MountPoint)
	// Both end up in the mount unit (Where=, Options=) and must read back the same from the environment
	// file and from a tag, where specs are separated by white space, ';' or a comma.
	if !utf8.ValidString(v.MountPoint) || strings.ContainsFunc(v.MountPoint, unsafeInSpec) || strings.Contains(v.MountPoint, ",") {
		return fmt.Errorf("mount point %q: use a path without white space, control characters, ',' or ';'", v.MountPoint)
	}
	if !utf8.ValidString(v.Options) || strings.ContainsFunc(v.Options, unsafeInSpec) {
		return fmt.Errorf("mount options %q: no white space, control characters or ';'", v.Options)
	}
	var opts []string
	for _, o := range strings.Split(v.Options, ",") {
		switch {
		case o == "": // "noatime," is "noatime", as mount reads it
		case specStartRE.MatchString(o):
			return fmt.Errorf("mount option %q is a volume spec: separate specs with a space", o)
		default:
			opts = append(opts, o)
		}
	}
	v.Options = strings.Join(opts, ",")
	for _, o := range *vs {
		switch {
		case o.Slot == v.Slot:
			return fmt.Errorf("slot %q given twice", v.Slot)
		case o.Device == v.Device:
			return fmt.Errorf("device %s given twice", v.Device)
		case o.MountPoint == v.MountPoint:
			return fmt.Errorf("mount point %s given twice", v.MountPoint)
		}
	}
	*vs = append(*vs, v)
	return nil
}

// unsafeInSpec is a character a mount point or mount options must not hold.
func unsafeInSpec(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) || r == ';' }

// orDefault returns the specs, or the default single slot when none was given.
func (vs volumeSpecs) orDefault() volumeSpecs {
	if len(vs) == 0 {
		return volumeSpecs{defaultVolumeSpec}
	}
	return vs
}
