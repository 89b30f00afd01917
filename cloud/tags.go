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
