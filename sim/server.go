package sim

import (
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"strings"
	"time"
)

// reqCtx is what an action handler sees of its request.
type reqCtx struct {
	p      params
	caller string
	now    time.Time
	cfg    Faults
}

// actionFunc handles one Query action under r.mu. It returns the body
// elements of the response (inside ActionResponse for EC2, inside
// ActionResult for Auto Scaling) or an AWS error.
type actionFunc func(r *Region, c *reqCtx) ([]node, *apiError)

func (r *Region) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/sim/iam-policy", r.serveIAMPolicy)
	mux.HandleFunc("/sim/", r.serveAdmin)
	mux.HandleFunc("/", r.serveAPI)
	return mux
}

// serveAPI answers EC2 and Auto Scaling Query requests. Both services share
// the port: the action name (and the Version parameter, 2016-11-15 for EC2,
// 2011-01-01 for Auto Scaling) decides which one answers.
func (r *Region) serveAPI(w http.ResponseWriter, req *http.Request) {
	reqID := newRequestID()
	start := time.Now()
	_ = req.ParseForm() // a malformed body leaves Action empty: MissingAction below
	action := req.Form.Get("Action")
	_, isASG := asgActions[action]
	if !isASG && req.Form.Get("Version") == "2011-01-01" {
		isASG = true
	}
	caller := callerFromRequest(req)
	mutating := isMutating(action)
	call := Call{Time: start, Action: action, Caller: caller, Mutating: mutating}
	var refund func() // resource tokens to give back if the call fails
	fail := func(e *apiError) {
		if refund != nil {
			refund()
		}
		call.Code = e.Code
		r.recordCall(call)
		r.log.Debug("api call failed", "action", action, "caller", caller, "code", e.Code, "msg", e.Message)
		if isASG {
			writeASGError(w, reqID, e)
		} else {
			writeEC2Error(w, reqID, e)
		}
	}

	faults := r.currentFaults()
	injected := faults
	if faults.AgentsOnly && callerInstance(caller) == "" {
		injected = Faults{ConsistencyDelay: faults.ConsistencyDelay}
	}
	if injected.Latency > 0 {
		select {
		case <-time.After(injected.Latency):
		case <-req.Context().Done():
			return
		}
	}
	if injected.DropRate > 0 && r.random() < injected.DropRate && dropConnection(w) {
		call.Code = "ConnectionDropped"
		r.recordCall(call)
		return
	}
	if action == "" {
		fail(badRequest("MissingAction", "The request must contain the parameter Action"))
		return
	}
	var h actionFunc
	if isASG {
		h = asgActions[action]
	} else {
		h = ec2Actions[action]
	}
	if h == nil {
		fail(badRequest("InvalidAction", "The action "+action+" is not valid for this web service (not implemented by the handover simulator)."))
		return
	}
	p := params{req.Form}
	var throttleErr *apiError
	if refund, throttleErr = r.throttled(action, isASG, mutating, p); throttleErr != nil {
		fail(throttleErr)
		return
	}
	if e := r.injectedError(injected, action, isASG); e != nil {
		fail(e)
		return
	}
	// IAM comes before DryRun: a dry run answers UnauthorizedOperation when the call is not allowed.
	// https://docs.aws.amazon.com/AWSEC2/latest/APIReference/CommonParameters.html
	if e := r.authorize(caller, action, isASG, p); e != nil {
		fail(e)
		return
	}
	if p.boolean("DryRun") {
		fail(errf(http.StatusPreconditionFailed, "DryRunOperation", "Request would have succeeded, but DryRun flag is set."))
		return
	}
	if !r.holdCall(req.Context(), action, caller, false) {
		call.Code = "ClientGone"
		r.recordCall(call)
		return
	}
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		fail(errf(http.StatusServiceUnavailable, "Unavailable", "The simulated region is shutting down."))
		return
	}
	body, aerr := h(r, &reqCtx{p: p, caller: caller, now: time.Now(), cfg: faults})
	if aerr == nil && mutating {
		r.afterChangeLocked()
	}
	r.mu.Unlock()
	r.holdCall(req.Context(), action, caller, true)
	if injected.SlowRate > 0 && r.random() < injected.SlowRate {
		select {
		case <-time.After(injected.SlowLatency):
		case <-req.Context().Done():
		}
	}
	if injected.DropAfterRate > 0 && r.random() < injected.DropAfterRate && dropConnection(w) {
		call.Code = "ResponseDropped"
		if aerr != nil {
			call.Code += ":" + aerr.Code
		}
		r.recordCall(call)
		return
	}
	if aerr != nil {
		fail(aerr)
		return
	}
	r.recordCall(call)
	r.log.Debug("api call", "action", action, "caller", caller, "instance", callerInstance(caller), "took", time.Since(start))
	if isASG {
		writeASG(w, action, reqID, body)
	} else {
		writeEC2(w, action, reqID, body)
	}
}

// dropConnection closes the client's connection without a response, as a reset in the network does.
func dropConnection(w http.ResponseWriter) bool {
	hj, ok := w.(http.Hijacker)
	if !ok {
		return false
	}
	conn, _, err := hj.Hijack()
	if err != nil {
		return false
	}
	_ = conn.Close()
	return true
}

// injectedError draws a retryable error for action from the fault rates:
// the service's throttling error or an internal error.
func (r *Region) injectedError(f Faults, action string, isASG bool) *apiError {
	rate, ok := f.ErrorRate[action]
	if !ok {
		rate = f.ErrorRate["*"]
	}
	if rate <= 0 || r.random() >= rate {
		return nil
	}
	switch throttle := r.random() < 0.5; {
	case throttle && isASG:
		return badRequest("Throttling", "Rate exceeded (injected fault)")
	case isASG:
		return errf(http.StatusInternalServerError, "InternalFailure", "An internal error has occurred. (injected fault)")
	case !throttle:
		return errf(http.StatusInternalServerError, "InternalError", "An internal error has occurred. (injected fault)")
	}
	return errf(http.StatusServiceUnavailable, "RequestLimitExceeded", "Request limit exceeded. (injected fault)")
}

// isMutating follows EC2's throttling categories: Describe*, Get*, List* and
// Search* do not change anything; every other action does.
func isMutating(action string) bool {
	for _, p := range []string{"Describe", "Get", "List", "Search"} {
		if strings.HasPrefix(action, p) {
			return false
		}
	}
	return action != ""
}

// callerFromRequest returns the access key of a SigV4-signed request
// ("Authorization: AWS4-HMAC-SHA256 Credential=AKID/date/region/service/aws4_request, ...")
// or of a presigned one (X-Amz-Credential). The signature is not checked.
func callerFromRequest(req *http.Request) string {
	auth := req.Header.Get("Authorization")
	if _, rest, ok := strings.Cut(auth, "Credential="); ok {
		key, _, _ := strings.Cut(rest, "/")
		return key
	}
	if c := req.Form.Get("X-Amz-Credential"); c != "" {
		key, _, _ := strings.Cut(c, "/")
		return key
	}
	return ""
}

// callerInstance maps an access key made by InstanceEnv back to the instance.
func callerInstance(caller string) string {
	if rest, ok := strings.CutPrefix(caller, "AKIDi"); ok {
		return "i-" + rest
	}
	return ""
}

func newRequestID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	h := hex.EncodeToString(b)
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// newID makes an AWS-looking id: prefix + "0" + 16 hex digits.
func newID(prefix string) string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return prefix + "-0" + hex.EncodeToString(b)
}

func validID(prefix, id string) bool {
	rest, ok := strings.CutPrefix(id, prefix+"-")
	if !ok || (len(rest) != 8 && len(rest) != 17) {
		return false
	}
	_, err := hex.DecodeString(strings.Repeat("0", len(rest)%2) + rest)
	return err == nil
}
