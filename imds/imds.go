// Package imds reads what handover needs from the EC2 instance metadata service: the instance's identity,
// its tags, and the three notices that announce its end (Auto Scaling target lifecycle state, spot
// interruption, rebalance recommendation).
//
// It speaks IMDSv2 only, through the SDK's feature/ec2/imds client with the v1 fallback switched off: a
// launch template that requires tokens (HttpTokens=required) must work, and a host that only answers v1 is
// not one handover should act on. Every call is bounded by a per-call timeout. This package never calls an
// AWS API other than IMDS and never decides what to do with what it reads: that is the agent's job.
package imds

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	sdkimds "github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
	"github.com/aws/smithy-go/middleware"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// DefaultEndpoint is where IMDS answers on every EC2 instance (IPv4).
const DefaultEndpoint = "http://169.254.169.254"

// DefaultCallTimeout bounds one metadata call, token fetch included.
const DefaultCallTimeout = 2 * time.Second

// ErrTagsDisabled means the instance does not expose its tags in metadata (InstanceMetadataTags is
// disabled in its launch template), so the caller must read them with ec2:DescribeTags instead.
// https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/work-with-tags-in-IMDS.html
var ErrTagsDisabled = errors.New("instance tags are not available in instance metadata (InstanceMetadataTags disabled)")

// ErrNotFound is returned for a metadata path that does not exist (HTTP 404).
var ErrNotFound = errors.New("metadata path not found")

// Options configures a Client.
type Options struct {
	// Endpoint of IMDS; empty means DefaultEndpoint. Tests and the simulator point it at 127.0.0.1.
	Endpoint string
	// CallTimeout bounds each call; zero means DefaultCallTimeout.
	CallTimeout time.Duration
	// TokenBound is how long WaitIdentity lets token requests that reached IMDS go unanswered before it
	// gives up on them (a hop limit too low); zero means DefaultTokenBound.
	TokenBound time.Duration
	// HTTPClient overrides the transport (tests).
	HTTPClient sdkimds.HTTPClient
}

// Client reads instance metadata with IMDSv2.
type Client struct {
	sdk        *sdkimds.Client
	endpoint   string
	timeout    time.Duration
	tokenBound time.Duration
}

// New returns a Client. It makes no request.
func New(o Options) *Client {
	if o.Endpoint == "" {
		o.Endpoint = DefaultEndpoint
	}
	if o.CallTimeout <= 0 {
		o.CallTimeout = DefaultCallTimeout
	}
	if o.TokenBound <= 0 {
		o.TokenBound = DefaultTokenBound
	}
	sdk := sdkimds.New(sdkimds.Options{
		Endpoint: o.Endpoint,
		// Never fall back to IMDSv1 when the token request fails.
		EnableFallback: aws.FalseTernary,
		// The SDK retries a failed call up to three times with a 1 s cap; our callers bound every call with a
		// context deadline and the boot-time wait retries on top, so keep the SDK's own retries short.
		Retryer: retry.AddWithMaxBackoffDelay(retry.NewStandard(func(so *retry.StandardOptions) {
			so.MaxAttempts = 2
		}), 200*time.Millisecond),
		HTTPClient:        o.HTTPClient,
		ClientEnableState: sdkimds.ClientEnabled,
		APIOptions:        []func(*middleware.Stack) error{addRecordAnswer},
	})
	return &Client{sdk: sdk, endpoint: o.Endpoint, timeout: o.CallTimeout, tokenBound: o.TokenBound}
}

// Endpoint is the IMDS address this client talks to (for messages).
func (c *Client) Endpoint() string { return c.endpoint }

// Identity is who and where this instance is.
type Identity struct {
	InstanceID         string `json:"instance_id"`
	AvailabilityZone   string `json:"az"`
	AvailabilityZoneID string `json:"az_id,omitempty"`
	Region             string `json:"region"`
	AccountID          string `json:"account_id"`
	InstanceType       string `json:"instance_type"`
	ImageID            string `json:"image_id,omitempty"`
	PrivateIP          string `json:"private_ip,omitempty"`
}

// Identity reads the instance identity document and the AZ ID (placement/availability-zone-id, which the
// document does not carry; absent on some older hosts, so a 404 there leaves it empty).
func (c *Client) Identity(ctx context.Context) (Identity, error) {
	const docPath = "/latest/dynamic/instance-identity/document"
	cctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	cctx, rec := withAnswerRecord(cctx)
	out, err := c.sdk.GetInstanceIdentityDocument(cctx, &sdkimds.GetInstanceIdentityDocumentInput{})
	if err != nil {
		return Identity{}, c.fail(docPath, rec, err)
	}
	doc := out.InstanceIdentityDocument
	id := Identity{
		InstanceID:       doc.InstanceID,
		AvailabilityZone: doc.AvailabilityZone,
		Region:           doc.Region,
		AccountID:        doc.AccountID,
		InstanceType:     doc.InstanceType,
		ImageID:          doc.ImageID,
		PrivateIP:        doc.PrivateIP,
	}
	if id.InstanceID == "" || id.AvailabilityZone == "" || id.Region == "" {
		// IMDS answered, with something we cannot use: retrying will not heal it.
		return Identity{}, &callError{endpoint: c.endpoint, path: docPath, status: http.StatusOK,
			err: errors.New("identity document lacks instanceId, availabilityZone or region")}
	}
	azID, err := c.Get(ctx, "placement/availability-zone-id")
	switch {
	case err == nil:
		id.AvailabilityZoneID = azID
	case errors.Is(err, ErrNotFound):
	default:
		return Identity{}, err
	}
	return id, nil
}

// Get reads one meta-data path (relative to /latest/meta-data/) and returns its text without surrounding
// white space. A 404 is ErrNotFound.
func (c *Client) Get(ctx context.Context, path string) (string, error) {
	cctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	cctx, rec := withAnswerRecord(cctx)
	out, err := c.sdk.GetMetadata(cctx, &sdkimds.GetMetadataInput{Path: path})
	if err != nil {
		return "", c.fail("/latest/meta-data/"+path, rec, err)
	}
	defer out.Content.Close()
	// Metadata documents are small; a bound keeps a broken server from making us read forever.
	b, err := io.ReadAll(io.LimitReader(out.Content, 1<<20))
	if err != nil {
		// The answer broke off (or the call's bound hit) mid-body: a connectivity failure, not an answer.
		return "", &callError{endpoint: c.endpoint, path: "/latest/meta-data/" + path, err: err}
	}
	return strings.TrimSpace(string(b)), nil
}

// Tags returns the instance's tags from tags/instance. When tags are not exposed in metadata it returns
// ErrTagsDisabled. Tag keys that metadata cannot carry are not there either, which is why handover's own
// tag keys avoid '/' and spaces.
func (c *Client) Tags(ctx context.Context) (map[string]string, error) {
	list, err := c.Get(ctx, "tags/instance")
	if errors.Is(err, ErrNotFound) {
		return nil, ErrTagsDisabled
	}
	if err != nil {
		return nil, err
	}
	tags := map[string]string{}
	for _, key := range strings.Split(list, "\n") {
		key = strings.TrimSpace(key)
		if key == "" {
			continue
		}
		v, err := c.Get(ctx, "tags/instance/"+key)
		if err != nil {
			return nil, err
		}
		tags[key] = v
	}
	return tags, nil
}

// TargetLifecycleState is the Auto Scaling lifecycle state the group wants this instance in ("InService",
// "Terminated", "Warmed:Stopped", ...). ok is false when the instance is not in an Auto Scaling group (404).
// https://docs.aws.amazon.com/autoscaling/ec2/userguide/retrieving-target-lifecycle-state-through-imds.html
func (c *Client) TargetLifecycleState(ctx context.Context) (state string, ok bool, err error) {
	s, err := c.Get(ctx, "autoscaling/target-lifecycle-state")
	if errors.Is(err, ErrNotFound) {
		return "", false, nil
	}
	if err != nil {
		return "", false, err
	}
	return s, true, nil
}

// Unreachable reports whether err means IMDS could not be reached or did not answer (as opposed to an
// answer we did not like). The boot commands retry on it; past their bound it becomes exit code 3.
//
// IMDS that answered with a 5xx is still starting and counts as unreachable. Any other answer is final:
// a 4xx (including a token request refused with 403, 404 or 405, as by a host that only speaks IMDSv1 or
// has IMDS turned off: a *TokenError), or a 200 with a document we cannot use. A token request that was
// sent and never answered counts as unreachable for one call; WaitIdentity gives up on it after the
// client's TokenBound.
func Unreachable(err error) bool {
	if err == nil {
		return false
	}
	var ce *callError
	if errors.As(err, &ce) {
		return ce.status == 0 || ce.status >= 500
	}
	var re *smithyhttp.ResponseError
	if errors.As(err, &re) {
		return re.HTTPStatusCode() >= 500
	}
	return !errors.Is(err, ErrNotFound)
}

// callError is how every Client call fails: the document it asked for and whether IMDS answered at all.
type callError struct {
	endpoint string
	path     string // e.g. /latest/meta-data/tags/instance
	status   int    // HTTP status of the last answer during the call; 0 when the last attempt got none
	last     roundTrip
	err      error
}

func (e *callError) Error() string { return fmt.Sprintf("imds %s%s: %v", e.endpoint, e.path, e.err) }
func (e *callError) Unwrap() error { return e.err }

// fail turns an SDK error into a callError. Only a 404 on the document itself is ErrNotFound: a 404 on
// the token request means the host does not speak IMDSv2, which must not read as "tags disabled" or
// "not in an Auto Scaling group". The SDK reports a failed token request with an error that hides its
// HTTP status (it does not unwrap), which is why the status comes from the answer record. A token request
// that IMDS answered with a refusal (4xx) is a *TokenError: the operator must change a metadata option.
func (c *Client) fail(path string, rec *answerRecord, err error) error {
	var re *smithyhttp.ResponseError
	last := rec.last()
	if errors.As(err, &re) && re.HTTPStatusCode() == http.StatusNotFound && !last.token {
		err = ErrNotFound
	}
	ce := &callError{endpoint: c.endpoint, path: path, status: last.status, last: last, err: err}
	if last.token && last.status >= 400 && last.status < 500 {
		return &TokenError{Endpoint: c.endpoint, Status: last.status, err: ce}
	}
	return ce
}

// roundTrip is what one HTTP round trip of a call did, as the transport saw it.
type roundTrip struct {
	token   bool // it was the token request (PUT /latest/api/token)
	status  int  // HTTP status of the answer; 0 when there was none
	sent    bool // the request was written to a connection (so the network path to IMDS is up)
	refused bool // the connection was refused (nothing listens, or a firewall rejects it)
}

// tokenUnanswered reports whether the round trip was a token request that reached IMDS and got no answer:
// what a PUT response hop limit too low for the caller looks like (the answer's packets expire on the way).
func (t roundTrip) tokenUnanswered() bool { return t.token && t.sent && t.status == 0 && !t.refused }

// answerRecord holds, for one Client call, the last round trip the SDK made for it (token PUT or GET,
// retries included).
type answerRecord struct {
	mu sync.Mutex
	rt roundTrip
}

func (r *answerRecord) last() roundTrip {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.rt
}

type answerRecordKey struct{}

func withAnswerRecord(ctx context.Context) (context.Context, *answerRecord) {
	rec := &answerRecord{}
	return context.WithValue(ctx, answerRecordKey{}, rec), rec
}

// addRecordAnswer installs recordAnswer last in the deserialize step, next to the transport, so that it
// sees every attempt's raw response, the token request's included (the SDK runs that as an operation of
// its own, with the same options and the caller's context).
func addRecordAnswer(stack *middleware.Stack) error {
	return stack.Deserialize.Add(recordAnswer{}, middleware.After)
}

type recordAnswer struct{}

func (recordAnswer) ID() string { return "handover.RecordAnswer" }

func (recordAnswer) HandleDeserialize(ctx context.Context, in middleware.DeserializeInput, next middleware.DeserializeHandler) (
	middleware.DeserializeOutput, middleware.Metadata, error,
) {
	rec, ok := ctx.Value(answerRecordKey{}).(*answerRecord)
	if !ok {
		return next.HandleDeserialize(ctx, in)
	}
	rt := roundTrip{}
	if req, ok := in.Request.(*smithyhttp.Request); ok && req.URL != nil {
		rt.token = req.URL.Path == tokenPath
	}
	// Whether the request reached a connection tells "IMDS got it and never answered" from "no way to it".
	var sent atomic.Bool
	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		WroteRequest: func(w httptrace.WroteRequestInfo) { sent.Store(w.Err == nil) },
	})
	out, md, err := next.HandleDeserialize(ctx, in)
	// On a transport failure smithy hands back an empty response with status 0.
	if resp, ok := out.RawResponse.(*smithyhttp.Response); ok && resp != nil && resp.Response != nil {
		rt.status = resp.StatusCode
	}
	rt.sent = sent.Load()
	rt.refused = rt.status == 0 && errors.Is(err, syscall.ECONNREFUSED)
	rec.mu.Lock()
	rec.rt = rt
	rec.mu.Unlock()
	return out, md, err
}
