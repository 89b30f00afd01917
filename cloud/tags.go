package cloud

// Tag keys: the contract between instances, addresses, volumes and snapshots (DESIGN.md). They use only
// characters that instance metadata tags allow (no '/', no spaces).
const (
	TagGroup          = "handover:group"
	TagSlot           = "handover:volume"
	TagGeneration     = "handover:generation"
	TagSourceVolume   = "handover:source-volume"
	TagSourceInstance = "handover:source-instance"
	TagConsistent     = "handover:consistent"
	TagCreatedBlank   = "handover:created-blank"
	TagSuperseded     = "handover:superseded"
	TagRole           = "handover:role"

	DefaultSlot = "data"
)

// ValidGroupName reports whether s can name a handover group: it is a tag value and part of idempotency
// tokens, so letters, digits, '-', '_' and '.' only, at most 64.
func ValidGroupName(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == '.':
		default:
			return false
		}
	}
	return true
}
