package agent

// Tag keys: the contract between instances, addresses, volumes and snapshots (DESIGN.md). They use only
// characters that instance metadata tags allow (no '/', no spaces).
const (
	tagGroup          = "handover:group"
	tagSlot           = "handover:volume"
	tagGeneration     = "handover:generation"
	tagSourceVolume   = "handover:source-volume"
	tagSourceInstance = "handover:source-instance"
	tagConsistent     = "handover:consistent"
	tagCreatedBlank   = "handover:created-blank"
	tagSuperseded     = "handover:superseded"
	tagRole           = "handover:role"

	defaultSlot = "data"
)
