package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"

	"github.com/handover/handover/cloud"
)

// The AWS CLI script at scale, modelled. Hundreds of `aws` processes at once would measure this 2-core
// machine's Python start-up queue, not the API: on real instances each script has its own CPU. So for the
// mass recovery the script runs as a model (peers cli-waiter-model and cli-poll-model): one goroutine per
// instance that makes exactly the script's API calls, in its order, with the same filters and parameters
// (hence the same token buckets), and with what the CLI adds around each call:
//
//   - an `aws` process start-up before every invocation, as a pause of the length measured on this
//     machine (cliStartup: the median of a few `aws ec2 describe-availability-zones` against an idle
//     region, minus nothing: the call itself is ~1 ms there), not as CPU;
//   - botocore's legacy retry mode, the default of AWS CLI v1 (botocore/data/_retry.json): at most 5
//     attempts, RequestLimitExceeded (503) retried after rand()·2^(attempt-1) s; the 5th failure ends the
//     script (set -e): a give-up;
//   - `aws ec2 wait volume-available` (botocore's VolumeAvailable waiter: DescribeVolumes at once, then
//     every 15 s, 40 attempts; an error response that no acceptor matches fails the waiter);
//   - the poll variant's `describe-volumes --volume-ids` every second (an id list is not a filter: the
//     unfiltered bucket), one invocation (start-up included) per poll;
//   - the device link checked every 0.1 s, and mount.
//
// At N=50 the mass section also runs the real script (cli-waiter, cli-poll) for comparison.

type cliModel struct {
	poll    bool
	startup time.Duration
	ec2     *ec2.Client
	rng     *rand.Rand
	calls   int
	dir     string
}

// cliStartup measures the start-up of an `aws` invocation: the median wall time of rounds calls of
// `aws ec2 describe-availability-zones` against an idle region.
func cliStartup(ctx context.Context, endpoint string, rounds int) (time.Duration, error) {
	var walls []float64
	env := map[string]string{"AWS_ENDPOINT_URL_EC2": endpoint, "AWS_ACCESS_KEY_ID": "AKIDCLISTARTUP", "AWS_SECRET_ACCESS_KEY": "x",
		"AWS_DEFAULT_REGION": "us-east-1", "AWS_PAGER": ""}
	for range rounds {
		p := run(ctx, env, "aws", "ec2", "describe-availability-zones", "--output", "text")
		if p.Code != 0 {
			return 0, fmt.Errorf("aws ec2 describe-availability-zones exited %d: %s", p.Code, p.Stderr)
		}
		walls = append(walls, p.Wall.Seconds())
	}
	return time.Duration(median(walls) * float64(time.Second)), nil
}

var errGaveUp = errors.New("gave up")

// invoke is one `aws` invocation: start-up, then the call with botocore's legacy retries.
func (m *cliModel) invoke(ctx context.Context, call func(context.Context) error) error {
	if err := sleep(ctx, m.startup); err != nil {
		return err
	}
	return m.retry(ctx, call)
}

func (m *cliModel) retry(ctx context.Context, call func(context.Context) error) error {
	for attempt := 1; ; attempt++ {
		m.calls++
		err := call(ctx)
		if err == nil || !throttled(err) {
			return err
		}
		if attempt == 5 {
			return fmt.Errorf("%w: %v (5 attempts)", errGaveUp, err)
		}
		if err := sleep(ctx, time.Duration(m.rng.Float64()*float64(int(1)<<(attempt-1))*float64(time.Second))); err != nil {
			return err
		}
	}
}

func throttled(err error) bool {
	var ae smithy.APIError
	return errors.As(err, &ae) && (ae.ErrorCode() == "RequestLimitExceeded" || ae.ErrorCode() == "Throttling")
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// recover is the script's cross-AZ path for one group: the newest volume, the newest completed snapshot of
// it, create-volume, the wait, attach, the device, mount, the address.
func (m *cliModel) recover(ctx context.Context, grp massGroup, az string) error {
	tags := []ec2types.Filter{
		{Name: aws.String("tag:" + cloud.TagGroup), Values: []string{grp.name}},
		{Name: aws.String("tag:" + cloud.TagSlot), Values: []string{"data"}},
	}
	var newest ec2types.Volume
	err := m.invoke(ctx, func(ctx context.Context) error {
		out, err := m.ec2.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{Filters: tags})
		if err != nil {
			return err
		}
		sort.Slice(out.Volumes, func(i, j int) bool {
			return aws.ToTime(out.Volumes[i].CreateTime).Before(aws.ToTime(out.Volumes[j].CreateTime))
		})
		if len(out.Volumes) == 0 {
			return fmt.Errorf("no volume")
		}
		newest = out.Volumes[len(out.Volumes)-1]
		return nil
	})
	if err != nil {
		return err
	}
	var snap string
	err = m.invoke(ctx, func(ctx context.Context) error {
		out, err := m.ec2.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{OwnerIds: []string{"self"}, Filters: append(tags,
			ec2types.Filter{Name: aws.String("volume-id"), Values: []string{aws.ToString(newest.VolumeId)}},
			ec2types.Filter{Name: aws.String("status"), Values: []string{"completed"}})})
		if err != nil {
			return err
		}
		if len(out.Snapshots) == 0 {
			return fmt.Errorf("no completed snapshot of %s", aws.ToString(newest.VolumeId))
		}
		snap = aws.ToString(out.Snapshots[len(out.Snapshots)-1].SnapshotId)
		return nil
	})
	if err != nil {
		return err
	}
	var vol string
	err = m.invoke(ctx, func(ctx context.Context) error {
		out, err := m.ec2.CreateVolume(ctx, &ec2.CreateVolumeInput{AvailabilityZone: aws.String(az), SnapshotId: aws.String(snap), VolumeType: ec2types.VolumeTypeGp3,
			ClientToken:       aws.String(grp.name + "-data-2-" + grp.repl),
			TagSpecifications: cloud.TagSpec(ec2types.ResourceTypeVolume, map[string]string{cloud.TagGroup: grp.name, cloud.TagSlot: "data", cloud.TagGeneration: "2"})})
		if err != nil {
			return err
		}
		vol = aws.ToString(out.VolumeId)
		return nil
	})
	if err != nil {
		return err
	}
	state := func(ctx context.Context) (string, error) {
		var s string
		err := m.retry(ctx, func(ctx context.Context) error {
			out, err := m.ec2.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{VolumeIds: []string{vol}})
			if err != nil {
				return err
			}
			if len(out.Volumes) == 1 {
				s = string(out.Volumes[0].State)
			}
			return nil
		})
		return s, err
	}
	if m.poll {
		for i := 0; ; i++ {
			if err := sleep(ctx, m.startup); err != nil {
				return err
			}
			s, err := state(ctx)
			if err != nil {
				return err
			}
			if s == "available" {
				break
			}
			if i >= 600 {
				return fmt.Errorf("%s still %s", vol, s)
			}
			if err := sleep(ctx, time.Second); err != nil {
				return err
			}
		}
	} else {
		if err := sleep(ctx, m.startup); err != nil {
			return err
		}
		for attempt := 1; ; attempt++ {
			s, err := state(ctx)
			if err != nil {
				return fmt.Errorf("waiter: %w", err)
			}
			if s == "available" {
				break
			}
			if attempt == 40 {
				return fmt.Errorf("%w: waiter: %s still %s after 40 attempts", errGaveUp, vol, s)
			}
			if err := sleep(ctx, 15*time.Second); err != nil {
				return err
			}
		}
	}
	err = m.invoke(ctx, func(ctx context.Context) error {
		_, err := m.ec2.AttachVolume(ctx, &ec2.AttachVolumeInput{VolumeId: aws.String(vol), InstanceId: aws.String(grp.repl), Device: aws.String("/dev/sdf")})
		return err
	})
	if err != nil {
		return err
	}
	link := filepath.Join(m.dir, "sim", "instances", grp.repl, "dev", "disk", "by-id", "nvme-Amazon_Elastic_Block_Store_"+strings.ReplaceAll(vol, "-", ""))
	for {
		if _, err := os.Stat(link); err == nil {
			break
		}
		if err := sleep(ctx, 100*time.Millisecond); err != nil {
			return err
		}
	}
	dev, err := filepath.EvalSymlinks(link)
	if err != nil {
		return err
	}
	mnt := mountPoint(m.dir, grp.repl)
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		return err
	}
	if out, err := exec.CommandContext(ctx, "mount", dev, mnt).CombinedOutput(); err != nil {
		return fmt.Errorf("mount %s: %v: %s", dev, err, out)
	}
	var alloc string
	err = m.invoke(ctx, func(ctx context.Context) error {
		out, err := m.ec2.DescribeAddresses(ctx, &ec2.DescribeAddressesInput{Filters: []ec2types.Filter{{Name: aws.String("tag:" + cloud.TagGroup), Values: []string{grp.name}}}})
		if err != nil {
			return err
		}
		if len(out.Addresses) == 0 {
			return fmt.Errorf("no address")
		}
		alloc = aws.ToString(out.Addresses[0].AllocationId)
		return nil
	})
	if err != nil {
		return err
	}
	return m.invoke(ctx, func(ctx context.Context) error {
		_, err := m.ec2.AssociateAddress(ctx, &ec2.AssociateAddressInput{AllocationId: aws.String(alloc), InstanceId: aws.String(grp.repl), AllowReassociation: aws.Bool(true)})
		return err
	})
}

// modelClient is an EC2 client as the instance, with the SDK's own retries off (the model retries as
// botocore does).
func modelClient(env map[string]string) *ec2.Client {
	cfg := aws.Config{Region: "us-east-1", Credentials: credentials.NewStaticCredentialsProvider(env["AWS_ACCESS_KEY_ID"], "secret", "")}
	return ec2.NewFromConfig(cfg, func(o *ec2.Options) {
		o.BaseEndpoint = aws.String(env["AWS_ENDPOINT_URL_EC2"])
		o.RetryMaxAttempts = 1
	})
}
