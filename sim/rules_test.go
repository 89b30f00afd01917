package sim

import (
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// TestClientTokenAcrossZones: the zone is not one of the parameters a reused
// ClientToken is checked against; what the other zone gets depends on
// Options.TokenAcrossAZ.
func TestClientTokenAcrossZones(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"", TokenFirst, TokenNew} {
		t.Run("mode="+mode, func(t *testing.T) {
			t.Parallel()
			r := startRegion(t, Options{TokenAcrossAZ: mode})
			c := ec2Client(r)
			ctx := ctxT(t)
			in := func(az string, size int32) *ec2.CreateVolumeInput {
				return &ec2.CreateVolumeInput{AvailabilityZone: aws.String(az), Size: aws.Int32(size),
					VolumeType: ec2types.VolumeTypeGp3, ClientToken: aws.String("tok-az")}
			}
			a, err := c.CreateVolume(ctx, in("us-east-1a", 2))
			if err != nil {
				t.Fatal(err)
			}
			b, err := c.CreateVolume(ctx, in("us-east-1b", 2))
			if err != nil {
				t.Fatalf("same token, same parameters, other zone: %v", err)
			}
			if mode == TokenNew {
				if *b.VolumeId == *a.VolumeId || *b.AvailabilityZone != "us-east-1b" {
					t.Fatalf("mode new: got %s in %s, want a new volume in us-east-1b (first %s)", *b.VolumeId, *b.AvailabilityZone, *a.VolumeId)
				}
			} else if *b.VolumeId != *a.VolumeId || *b.AvailabilityZone != "us-east-1a" {
				t.Fatalf("mode first: got %s in %s, want the first volume %s in us-east-1a", *b.VolumeId, *b.AvailabilityZone, *a.VolumeId)
			}
			// Any other parameter still counts, from either zone.
			for _, az := range []string{"us-east-1a", "us-east-1b"} {
				_, err = c.CreateVolume(ctx, in(az, 3))
				wantCode(t, err, "IdempotentParameterMismatch")
			}
		})
	}
}
