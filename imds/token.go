package imds

import (
	"errors"
	"fmt"
	"net/http"
	"time"
)

// The IMDSv2 session token, and how its request fails. Every metadata read starts with
// PUT /latest/api/token (the SDK caches the token for its TTL); handover never reads metadata without one,
// so a token request that fails ends every read, and the way it fails says which of the instance's
// metadata options is wrong (https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/instancedata-data-retrieval.html,
// https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/configuring-IMDS-existing-instances.html):
//
//   - 403 Forbidden: IMDS is turned off for the instance (HttpEndpoint=disabled), or the request came
//     through a proxy (IMDS refuses a token request that carries X-Forwarded-For).
//   - 404 or 405 on the PUT: whatever answers does not issue IMDSv2 tokens (an IMDSv1-only emulation, or a
//     proxy or firewall that lets GET through and not PUT). EC2 itself always issues them while the
//     endpoint is on; HttpTokens=optional only adds the tokenless IMDSv1 that handover never uses.
//   - the PUT is sent and its answer never arrives: the PUT response hop limit (HttpPutResponseHopLimit,
//     1 by default) is too low for where handover runs. In a container the answer needs a second hop;
//     AWS: "if the hop limit is 1 in a container environment, the call might not receive a response at
//     all". Only the PUT's answer is limited, so GETs would still work: that is the symptom.
//   - the connection is refused: nothing listens at the endpoint (not on EC2) or a firewall rejects it.

const tokenPath = "/latest/api/token"

// DefaultTokenBound is how long WaitIdentity lets token requests go unanswered before it says the hop limit
// is too low. IMDS answers a PUT it received within milliseconds; a network that is still coming up at
// boot refuses or drops the connection instead, which WaitIdentity keeps waiting for.
const DefaultTokenBound = 10 * time.Second

// TokenError is a token request that IMDS refused (Status is its HTTP status) or, with Unanswered, one
// that reached IMDS and was never answered. Its message is one line that names the metadata option to
// change; the SDK's error it came from is its Unwrap.
type TokenError struct {
	Endpoint   string
	Status     int           // 403, 404, 405, 400 ...; 0 with Unanswered
	Unanswered bool          // sent, never answered, for Waited
	Waited     time.Duration // how long the token requests went unanswered
	err        error
}

func (e *TokenError) Unwrap() error { return e.err }

func (e *TokenError) Error() string {
	put := "PUT " + tokenPath
	if e.Unanswered {
		return fmt.Sprintf("instance metadata at %s received the IMDSv2 token request (%s) but its answer did not arrive within %s: the instance's PUT response hop limit is too low for where handover runs (a container needs 2): set HttpPutResponseHopLimit=2 (aws ec2 modify-instance-metadata-options --http-put-response-hop-limit 2 --http-endpoint enabled, and in the launch template)",
			e.Endpoint, put, e.Waited.Round(time.Second))
	}
	answered := fmt.Sprintf("%s answered %d %s", put, e.Status, http.StatusText(e.Status))
	switch e.Status {
	case http.StatusForbidden:
		return fmt.Sprintf("instance metadata at %s refused the IMDSv2 token request (%s): the instance's metadata endpoint is turned off, set HttpEndpoint=enabled (aws ec2 modify-instance-metadata-options --http-endpoint enabled, and in the launch template); or a proxy forwarded the request, which IMDS refuses",
			e.Endpoint, answered)
	case http.StatusNotFound, http.StatusMethodNotAllowed:
		return fmt.Sprintf("instance metadata at %s does not issue IMDSv2 tokens (%s): handover reads metadata with IMDSv2 only and never falls back to IMDSv1; let PUT to the metadata endpoint through (a proxy or firewall blocks it, or this is not EC2's IMDS) and set HttpTokens=required in the launch template",
			e.Endpoint, answered)
	case http.StatusBadRequest:
		return fmt.Sprintf("instance metadata at %s refused the IMDSv2 token request as malformed (%s): something between handover and IMDS rewrites requests (the X-aws-ec2-metadata-token-ttl-seconds header must reach IMDS); remove that proxy",
			e.Endpoint, answered)
	}
	return fmt.Sprintf("instance metadata at %s refused the IMDSv2 token request (%s): check the instance's metadata options (HttpEndpoint=enabled, HttpTokens=required)", e.Endpoint, answered)
}

// tokenUnanswered reports whether err is a call whose last round trip was a token request that reached
// IMDS and got no answer.
func tokenUnanswered(err error) bool {
	var ce *callError
	return errors.As(err, &ce) && ce.last.tokenUnanswered()
}

// connectionRefused reports whether err is a call whose last round trip found nothing accepting the
// connection.
func connectionRefused(err error) bool {
	var ce *callError
	return errors.As(err, &ce) && ce.last.refused
}
