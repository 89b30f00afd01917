package imds

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"time"
)

// SpotAction is a scheduled spot interruption: about two minutes before EC2 stops, hibernates or terminates
// a spot instance, spot/instance-action appears.
// https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/spot-instance-termination-notices.html
type SpotAction struct {
	Action string    `json:"action"` // "terminate", "stop" or "hibernate"
	Time   time.Time `json:"time"`
}

// SpotInstanceAction returns the pending spot interruption, or nil when none is scheduled (404).
func (c *Client) SpotInstanceAction(ctx context.Context) (*SpotAction, error) {
	var a SpotAction
	found, err := c.getJSON(ctx, "spot/instance-action", &a)
	if err != nil || !found {
		return nil, err
	}
	if a.Action == "" {
		return nil, &callError{endpoint: c.endpoint, path: "/latest/meta-data/spot/instance-action", status: http.StatusOK,
			err: errors.New("document has no action")}
	}
	return &a, nil
}

// Rebalance is an EC2 instance rebalance recommendation: a spot instance is at elevated risk of
// interruption. https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/rebalance-recommendations.html
type Rebalance struct {
	NoticeTime time.Time `json:"noticeTime"`
}

// RebalanceRecommendation returns the recommendation, or nil when there is none (404).
func (c *Client) RebalanceRecommendation(ctx context.Context) (*Rebalance, error) {
	var r Rebalance
	found, err := c.getJSON(ctx, "events/recommendations/rebalance", &r)
	if err != nil || !found {
		return nil, err
	}
	return &r, nil
}

func (c *Client) getJSON(ctx context.Context, path string, v any) (bool, error) {
	s, err := c.Get(ctx, path)
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if err := json.Unmarshal([]byte(s), v); err != nil {
		// IMDS answered with a document we cannot read: an answer, not an outage.
		return false, &callError{endpoint: c.endpoint, path: "/latest/meta-data/" + path, status: http.StatusOK, err: err}
	}
	return true, nil
}
