package sim

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// imdsServer is one instance's metadata service on its own loopback port.
// It behaves like IMDS with IMDSv2 required
// (https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/configuring-instance-metadata-service.html):
// PUT /latest/api/token with X-aws-ec2-metadata-token-ttl-seconds (1-21600)
// returns a token; every GET needs a valid one (401 otherwise); a token PUT
// carrying X-Forwarded-For is refused (403) as AWS refuses proxied requests.
type imdsServer struct {
	ln  net.Listener
	srv *http.Server
	now func() time.Time // Options.IMDSClock: token lifetimes

	mu     sync.Mutex
	tokens map[string]time.Time
}

func (s *imdsServer) url() string { return "http://" + s.ln.Addr().String() }

func (s *imdsServer) close() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := s.srv.Shutdown(ctx); err != nil {
		_ = s.srv.Close()
	}
}

// startIMDSLocked serves the instance's IMDS, on the port it had before
// when that port is still free (so exported environments stay valid across
// a restart of the simulator).
func (r *Region) startIMDSLocked(in *instance) {
	if r.imds[in.ID] != nil || !r.started || r.closed {
		return
	}
	var ln net.Listener
	var err error
	if in.IMDSPort != 0 {
		ln, err = net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", in.IMDSPort))
	}
	if ln == nil {
		ln, err = net.Listen("tcp", "127.0.0.1:0")
	}
	if err != nil {
		r.log.Error("imds listen", "instance", in.ID, "err", err)
		return
	}
	s := &imdsServer{ln: ln, tokens: map[string]time.Time{}, now: r.opts.IMDSClock}
	s.srv = &http.Server{Handler: r.imdsHandler(in.ID, s), ReadHeaderTimeout: 5 * time.Second}
	in.IMDSPort = ln.Addr().(*net.TCPAddr).Port
	r.imds[in.ID] = s
	go func() {
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			r.log.Error("imds server stopped", "instance", in.ID, "err", err)
		}
	}()
	r.log.Debug("imds serving", "instance", in.ID, "url", s.url())
}

func (r *Region) stopIMDSLocked(id string) {
	if s := r.imds[id]; s != nil {
		s.close()
		delete(r.imds, id)
	}
}

func (r *Region) imdsHandler(id string, s *imdsServer) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		if req.URL.Path == "/latest/api/token" {
			s.putToken(w, req)
			return
		}
		if req.Method != http.MethodGet && req.Method != http.MethodHead {
			http.Error(w, "Method Not Allowed", http.StatusMethodNotAllowed)
			return
		}
		if !s.validToken(req.Header.Get("X-aws-ec2-metadata-token")) {
			http.Error(w, "Unauthorized", http.StatusUnauthorized)
			return
		}
		path, ok := strings.CutPrefix(req.URL.Path, "/latest/")
		if !ok {
			http.NotFound(w, req)
			return
		}
		r.mu.Lock()
		in := r.w.Instances[id]
		var body string
		found := false
		if in != nil {
			body, found = r.imdsLookupLocked(in, path)
		}
		r.mu.Unlock()
		if !found {
			http.Error(w, "Not Found", http.StatusNotFound)
			return
		}
		_, _ = w.Write([]byte(body))
	})
}

func (s *imdsServer) putToken(w http.ResponseWriter, req *http.Request) {
	if req.Method != http.MethodPut {
		http.Error(w, "Method Not Allowed", http.StatusMethodNotAllowed)
		return
	}
	if req.Header.Get("X-Forwarded-For") != "" {
		http.Error(w, "Forbidden", http.StatusForbidden)
		return
	}
	ttl, err := strconv.Atoi(req.Header.Get("X-aws-ec2-metadata-token-ttl-seconds"))
	if err != nil || ttl < 1 || ttl > 21600 {
		http.Error(w, "Bad Request", http.StatusBadRequest)
		return
	}
	b := make([]byte, 42)
	_, _ = rand.Read(b)
	tok := base64.URLEncoding.EncodeToString(b)
	s.mu.Lock()
	s.tokens[tok] = s.now().Add(time.Duration(ttl) * time.Second)
	s.mu.Unlock()
	w.Header().Set("X-aws-ec2-metadata-token-ttl-seconds", strconv.Itoa(ttl))
	_, _ = w.Write([]byte(tok))
}

func (s *imdsServer) validToken(tok string) bool {
	if tok == "" {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	exp, ok := s.tokens[tok]
	if ok && s.now().After(exp) {
		delete(s.tokens, tok)
		return false
	}
	return ok
}

// metadataTagKey says whether a tag key can appear in instance metadata: AWS
// skips keys with characters a metadata path cannot hold
// (https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/work-with-tags-in-IMDS.html).
func metadataTagKey(k string) bool {
	if k == "" || k == "." || k == ".." {
		return false
	}
	for _, c := range k {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("+-=._:", c)
		if !ok {
			return false
		}
	}
	return true
}

// targetLifecycleState is what autoscaling/target-lifecycle-state shows
// (https://docs.aws.amazon.com/autoscaling/ec2/userguide/retrieving-target-lifecycle-state-through-imds.html):
// the state the instance is heading to, so Terminated as soon as it enters
// Terminating or Terminating:Wait, InService while it is Pending(:Wait). An
// instance on its way into the warm pool (Warmed:Pending, Warmed:Pending:Wait)
// is heading to warmTarget (Warmed:Stopped, Warmed:Running or
// Warmed:Hibernated, the pool's PoolState), one leaving it to
// Warmed:Terminated.
func targetLifecycleState(lifecycle, warmTarget string) string {
	switch {
	case strings.HasPrefix(lifecycle, "Terminat"):
		return "Terminated"
	case strings.HasPrefix(lifecycle, "Detach"):
		return "Detached"
	case strings.HasPrefix(lifecycle, "Warmed:Terminat"):
		return "Warmed:Terminated"
	case strings.HasPrefix(lifecycle, "Warmed:"):
		return warmTarget
	}
	return "InService"
}

func (r *Region) targetLifecycleStateLocked(in *instance) string {
	target := "Warmed:Stopped"
	if g := r.w.Groups[in.Group]; g != nil {
		target = warmTarget(g)
	}
	return targetLifecycleState(in.Lifecycle, target)
}

// imdsTreeLocked is the instance's metadata as leaf path -> value, plus the
// directories that exist even when empty.
func (r *Region) imdsTreeLocked(in *instance) (map[string]string, map[string]bool) {
	leaves := map[string]string{
		"meta-data/ami-id":                                              in.ImageID,
		"meta-data/ami-launch-index":                                    "0",
		"meta-data/hostname":                                            "ip-" + strings.ReplaceAll(in.PrivateIP, ".", "-") + ".ec2.internal",
		"meta-data/local-hostname":                                      "ip-" + strings.ReplaceAll(in.PrivateIP, ".", "-") + ".ec2.internal",
		"meta-data/instance-id":                                         in.ID,
		"meta-data/instance-type":                                       in.Type,
		"meta-data/local-ipv4":                                          in.PrivateIP,
		"meta-data/mac":                                                 in.MAC,
		"meta-data/placement/availability-zone":                         in.AZ,
		"meta-data/placement/availability-zone-id":                      r.azID(in.AZ),
		"meta-data/placement/region":                                    r.opts.Region,
		"meta-data/block-device-mapping/ami":                            "/dev/xvda",
		"meta-data/block-device-mapping/root":                           "/dev/xvda",
		"meta-data/services/domain":                                     "amazonaws.com",
		"meta-data/services/partition":                                  "aws",
		"meta-data/network/interfaces/macs/" + in.MAC + "/interface-id": in.ENI,
		"meta-data/network/interfaces/macs/" + in.MAC + "/local-ipv4s":  in.PrivateIP,
		"meta-data/network/interfaces/macs/" + in.MAC + "/subnet-id":    in.SubnetID,
		"meta-data/network/interfaces/macs/" + in.MAC + "/vpc-id":       "vpc-0sim",
		"dynamic/instance-identity/document":                            r.identityDocument(in),
	}
	dirs := map[string]bool{"meta-data": true, "dynamic": true}
	if ip := r.publicIP(in); ip != "" {
		leaves["meta-data/public-ipv4"] = ip
		leaves["meta-data/network/interfaces/macs/"+in.MAC+"/public-ipv4s"] = ip
	}
	n := 0
	for _, v := range r.attachedVolumes(in.ID) {
		if v.Attachment.State == "attached" {
			n++
			leaves[fmt.Sprintf("meta-data/block-device-mapping/ebs%d", n)] = v.Attachment.Device
		}
	}
	if in.MetadataTags {
		dirs["meta-data/tags"], dirs["meta-data/tags/instance"] = true, true
		for k, v := range in.Tags {
			if metadataTagKey(k) {
				leaves["meta-data/tags/instance/"+k] = v
			}
		}
	}
	if in.Group != "" && in.Lifecycle != "" {
		leaves["meta-data/autoscaling/target-lifecycle-state"] = r.targetLifecycleStateLocked(in)
	}
	if in.SpotAction != "" {
		b, _ := json.Marshal(map[string]string{"action": in.SpotAction, "time": in.SpotTime.UTC().Format(time.RFC3339)})
		leaves["meta-data/spot/instance-action"] = string(b)
		if in.SpotAction == "terminate" {
			leaves["meta-data/spot/termination-time"] = in.SpotTime.UTC().Format(time.RFC3339)
		}
	}
	if !in.RebalanceTime.IsZero() {
		b, _ := json.Marshal(map[string]string{"noticeTime": in.RebalanceTime.UTC().Format(time.RFC3339)})
		leaves["meta-data/events/recommendations/rebalance"] = string(b)
	}
	if len(in.Events) > 0 {
		leaves["meta-data/events/maintenance/scheduled"] = scheduledEventsDoc(in.Events)
	}
	return leaves, dirs
}

// imdsLookupLocked answers a path: a leaf's value, or a directory listing
// (children one per line, subdirectories with a trailing slash, no final
// newline, like IMDS).
func (r *Region) imdsLookupLocked(in *instance, path string) (string, bool) {
	leaves, dirs := r.imdsTreeLocked(in)
	clean := strings.TrimSuffix(path, "/")
	if v, ok := leaves[clean]; ok && !strings.HasSuffix(path, "/") {
		return v, true
	}
	children := map[string]bool{}
	for k := range leaves {
		rest, ok := strings.CutPrefix(k, clean+"/")
		if !ok {
			continue
		}
		if head, _, more := strings.Cut(rest, "/"); more {
			children[head+"/"] = true
		} else {
			children[head] = true
		}
	}
	if clean == "" {
		children = map[string]bool{"dynamic/": true, "meta-data/": true}
	}
	if len(children) == 0 && !dirs[clean] {
		return "", false
	}
	names := make([]string, 0, len(children))
	for c := range children {
		names = append(names, c)
	}
	sort.Strings(names)
	return strings.Join(names, "\n"), true
}

func (r *Region) identityDocument(in *instance) string {
	doc := map[string]any{
		"accountId":               accountID,
		"architecture":            "x86_64",
		"availabilityZone":        in.AZ,
		"billingProducts":         nil,
		"devpayProductCodes":      nil,
		"marketplaceProductCodes": nil,
		"imageId":                 in.ImageID,
		"instanceId":              in.ID,
		"instanceType":            in.Type,
		"kernelId":                nil,
		"pendingTime":             in.LaunchTime.UTC().Format(time.RFC3339),
		"privateIp":               in.PrivateIP,
		"ramdiskId":               nil,
		"region":                  r.opts.Region,
		"version":                 "2017-09-30",
	}
	b, _ := json.MarshalIndent(doc, "", "  ")
	return string(b)
}

// ScheduledEvent is an event EC2 announces for an instance in its metadata
// (events/maintenance/scheduled): a stop, retirement, reboot or maintenance
// (https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/monitoring-instances-status-check_sched.html).
// The sim publishes it (ScheduleEvent, POST /sim/scheduled-event); it does not
// carry it out at NotBefore.
type ScheduledEvent struct {
	Code        string    `json:"code"`  // instance-stop, instance-retirement, system-reboot, system-maintenance, instance-reboot
	State       string    `json:"state"` // active, completed, canceled
	EventID     string    `json:"eventId"`
	Description string    `json:"description,omitempty"`
	NotBefore   time.Time `json:"notBefore"`
	NotAfter    time.Time `json:"notAfter"`
}

// scheduledEventCodes are the codes EC2 uses
// (https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_InstanceStatusEvent.html).
var scheduledEventCodes = map[string]bool{"instance-stop": true, "instance-retirement": true, "system-reboot": true, "system-maintenance": true, "instance-reboot": true}

// scheduledEventsDoc is the JSON list IMDS serves: the fields and the time
// layout of the page's example ("21 Jan 2019 09:00:43 GMT"), as
// amazon-ec2-metadata-mock serves them too (its NotBeforeDeadline included).
func scheduledEventsDoc(evs []ScheduledEvent) string {
	const layout = "2 Jan 2006 15:04:05 GMT"
	type item struct {
		Code, Description, State, EventId, NotBefore, NotAfter, NotBeforeDeadline string // IMDS's field names
	}
	out := make([]item, 0, len(evs))
	for _, e := range evs {
		desc := e.Description
		if desc == "" {
			desc = "The instance is scheduled for " + e.Code
		}
		switch e.State {
		case "completed":
			desc = "[Completed] " + desc
		case "canceled":
			desc = "[Canceled] " + desc
		}
		out = append(out, item{Code: e.Code, Description: desc, State: e.State, EventId: e.EventID,
			NotBefore: e.NotBefore.UTC().Format(layout), NotAfter: e.NotAfter.UTC().Format(layout),
			NotBeforeDeadline: e.NotAfter.Add(48 * time.Hour).UTC().Format(layout)})
	}
	b, _ := json.MarshalIndent(out, "", "\t")
	return string(b)
}

// ScheduleEvent publishes a scheduled event in the instance's metadata and
// returns its id. An event with the id of one already there replaces it (to
// cancel or complete it: State "canceled" or "completed"); empty State is
// active, zero NotAfter a week after NotBefore.
func (r *Region) ScheduleEvent(instanceID string, e ScheduledEvent) (string, error) {
	if !scheduledEventCodes[e.Code] {
		return "", fmt.Errorf("sim: event code %q: want instance-stop, instance-retirement, system-reboot, system-maintenance or instance-reboot", e.Code)
	}
	switch e.State {
	case "":
		e.State = "active"
	case "active", "completed", "canceled":
	default:
		return "", fmt.Errorf("sim: event state %q: want active, completed or canceled", e.State)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	in := r.w.Instances[instanceID]
	if in == nil {
		return "", fmt.Errorf("sim: no instance %s", instanceID)
	}
	e.NotBefore = e.NotBefore.UTC().Truncate(time.Second)
	if e.NotAfter.IsZero() {
		e.NotAfter = e.NotBefore.Add(7 * 24 * time.Hour)
	}
	if e.EventID == "" {
		e.EventID = "instance-event-" + strings.TrimPrefix(newID("x"), "x-")
	}
	for i, old := range in.Events {
		if old.EventID == e.EventID {
			in.Events[i] = e
			r.afterChangeLocked()
			return e.EventID, nil
		}
	}
	in.Events = append(in.Events, e)
	r.afterChangeLocked()
	return e.EventID, nil
}
