package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/handover/handover/cloud"
	"github.com/handover/handover/imds"
	"github.com/handover/handover/internal/fail"
	"github.com/handover/handover/internal/logkey"
	"github.com/handover/handover/internal/wait"
)

// self is what a command knows about the instance it runs on.
type self struct {
	imds.Identity
	Tags     map[string]string `json:"tags"`
	TagsFrom string            `json:"tags_from"` // "imds" or "ec2:DescribeTags"
}

// newIMDS returns the metadata client. AWS_EC2_METADATA_SERVICE_ENDPOINT is the SDK's own variable for
// another endpoint (the simulator, a mock).
func newIMDS(getenv func(string) string) *imds.Client {
	return imds.New(imds.Options{Endpoint: getenv("AWS_EC2_METADATA_SERVICE_ENDPOINT")})
}

// identify reads this instance's identity, waiting at most bound for IMDS. Each way metadata can fail to
// answer is one line that names what to fix (exit 3), never the SDK's chain of errors: a refused or
// unanswered token request names the metadata option (imds.TokenError), a refused connection says that
// nothing listens, a silent endpoint says how long it was given.
func identify(ctx context.Context, log *slog.Logger, md *imds.Client, bound time.Duration) (imds.Identity, error) {
	id, err := md.WaitIdentity(ctx, bound, log)
	if err == nil {
		return id, nil
	}
	var te *imds.TokenError
	switch {
	case errors.As(err, &te):
		log.Debug("instance metadata token request failed", logkey.Step, "identity", logkey.Error, fmt.Sprint(te.Unwrap()))
		return imds.Identity{}, fail.Precondition(te.Error(), nil)
	case errors.Is(err, imds.ErrConnectionRefused):
		return imds.Identity{}, fail.Precondition(fmt.Sprintf(
			"nothing accepts connections at the instance metadata endpoint %s (connection refused for %s): not on EC2, or IMDS unreachable: a local firewall rejects it, or the instance's metadata endpoint is off (set HttpEndpoint=enabled)",
			md.Endpoint(), bound), nil)
	case errors.Is(err, imds.ErrUnreachable):
		return imds.Identity{}, fail.Precondition(fmt.Sprintf(
			"instance metadata at %s did not answer within %s: not on EC2, or IMDS unreachable (check the instance's metadata options: HttpEndpoint enabled, HttpTokens required, hop limit; or raise --imds-timeout)",
			md.Endpoint(), bound), nil)
	}
	return imds.Identity{}, fmt.Errorf("read instance identity: %w", err)
}

// instanceTags reads this instance's tags from metadata, or, when the launch template does not expose tags
// in metadata, with ec2:DescribeTags for the instance's own ID.
//
// A metadata read that times out or finds nothing listening is read again for at most bound, as the
// identity is (imds.WaitIdentity): IMDS answered a moment ago, and a slow answer at boot (a machine busy
// starting everything at once) is not a reason to abandon the launch.
func instanceTags(ctx context.Context, log *slog.Logger, md *imds.Client, ec2c func() (cloud.EC2, error), instanceID string, bound time.Duration) (map[string]string, string, error) {
	var tags map[string]string
	err := wait.Poll(ctx, log, wait.Spec{What: "instance tags in metadata", Bound: max(bound, time.Millisecond), Step: "identity", Transient: func(err error) bool {
		return !errors.Is(err, imds.ErrTagsDisabled) && imds.Unreachable(err)
	}},
		func(ctx context.Context) (bool, string, error) {
			t, err := md.Tags(ctx)
			tags = t
			seen := "answered"
			if err != nil {
				seen = err.Error()
			}
			return err == nil, seen, err
		})
	if err == nil {
		return tags, "imds", nil
	}
	if !errors.Is(err, imds.ErrTagsDisabled) {
		return nil, "", fmt.Errorf("read instance tags: %w", err)
	}
	client, err := ec2c()
	if err != nil {
		return nil, "", err
	}
	tags, err = cloud.InstanceTags(ctx, client, instanceID)
	if cloud.HasCode(err, cloud.CodeUnauthorizedOp) {
		// The instance's configuration, not a failure while acting: no rerun heals it (exit 3).
		return nil, "", fail.Precondition("instance tags are not in metadata and the instance role may not call ec2:DescribeTags: enable InstanceMetadataTags in the launch template, or allow ec2:DescribeTags", err)
	}
	if err != nil {
		return nil, "", fmt.Errorf("instance tags are not in metadata and reading them failed (allow ec2:DescribeTags in the instance role, or enable InstanceMetadataTags in the launch template): %w", err)
	}
	return tags, "ec2:DescribeTags", nil
}
