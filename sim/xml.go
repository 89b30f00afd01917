package sim

import (
	"bytes"
	"encoding/xml"
	"net/http"
	"sort"
	"strconv"
	"time"
)

const (
	ec2Namespace = "http://ec2.amazonaws.com/doc/2016-11-15/"
	asgNamespace = "http://autoscaling.amazonaws.com/doc/2011-01-01/"
)

// node is a tiny XML tree: the Query protocol's responses are plain nested
// elements, and building them as trees keeps each action's shape next to its
// logic instead of in hundreds of struct declarations.
type node struct {
	name string
	text string
	kids []node
	leaf bool
	skip bool
}

// el is an element with children; empty children are skipped.
func el(name string, kids ...node) node { return node{name: name, kids: kids} }

// tx is an element holding text (always written, even when empty).
func tx(name, text string) node { return node{name: name, text: text, leaf: true} }

// opt is an element holding text, omitted when text is empty.
func opt(name, text string) node {
	if text == "" {
		return node{skip: true}
	}
	return tx(name, text)
}

func num(name string, n int) node { return tx(name, strconv.Itoa(n)) }

func boolean(name string, b bool) node { return tx(name, strconv.FormatBool(b)) }

// ts formats a time like AWS (ISO 8601, milliseconds, UTC).
func ts(name string, t time.Time) node {
	if t.IsZero() {
		return node{skip: true}
	}
	return tx(name, awsTime(t))
}

func awsTime(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z") }

// list wraps items in name, each as an element called item (EC2) or member
// (Auto Scaling).
func list(name, itemName string, items []node) node {
	n := node{name: name}
	for _, it := range items {
		it.name = itemName
		n.kids = append(n.kids, it)
	}
	return n
}

func (n node) write(b *bytes.Buffer) {
	if n.skip {
		return
	}
	b.WriteString("<" + n.name + ">")
	if n.leaf {
		_ = xml.EscapeText(b, []byte(n.text))
	}
	for _, k := range n.kids {
		k.write(b)
	}
	b.WriteString("</" + n.name + ">")
}

// ec2TagSet renders tags the way EC2 does (sorted for stable output).
func ec2TagSet(tags map[string]string) node {
	if len(tags) == 0 {
		return node{skip: true}
	}
	var items []node
	for _, k := range sortedKeys(tags) {
		items = append(items, el("", tx("key", k), tx("value", tags[k])))
	}
	return list("tagSet", "item", items)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// apiError is an AWS error response.
type apiError struct {
	Status  int
	Code    string
	Message string
}

func (e *apiError) Error() string { return e.Code + ": " + e.Message }

func errf(status int, code, msg string) *apiError {
	return &apiError{Status: status, Code: code, Message: msg}
}

// badRequest is the usual client error (HTTP 400).
func badRequest(code, msg string) *apiError { return errf(http.StatusBadRequest, code, msg) }

func writeXML(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", "text/xml;charset=UTF-8")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// writeEC2 writes <ActionResponse xmlns=...><requestId>..</requestId>...,
// the EC2 Query response shape.
func writeEC2(w http.ResponseWriter, action, reqID string, body []node) {
	var b bytes.Buffer
	b.WriteString(xml.Header)
	b.WriteString("<" + action + "Response xmlns=\"" + ec2Namespace + "\">")
	tx("requestId", reqID).write(&b)
	for _, n := range body {
		n.write(&b)
	}
	b.WriteString("</" + action + "Response>")
	writeXML(w, http.StatusOK, b.Bytes())
}

// writeEC2Error writes EC2's error shape:
// <Response><Errors><Error><Code/><Message/></Error></Errors><RequestID/></Response>.
func writeEC2Error(w http.ResponseWriter, reqID string, e *apiError) {
	var b bytes.Buffer
	b.WriteString(xml.Header)
	el("Response",
		el("Errors", el("Error", tx("Code", e.Code), tx("Message", e.Message))),
		tx("RequestID", reqID)).write(&b)
	writeXML(w, e.Status, b.Bytes())
}

// writeASG writes the Auto Scaling (awsquery) shape:
// <ActionResponse><ActionResult>...</ActionResult><ResponseMetadata>.
func writeASG(w http.ResponseWriter, action, reqID string, body []node) {
	var b bytes.Buffer
	b.WriteString(xml.Header)
	b.WriteString("<" + action + "Response xmlns=\"" + asgNamespace + "\">")
	el(action+"Result", body...).write(&b)
	el("ResponseMetadata", tx("RequestId", reqID)).write(&b)
	b.WriteString("</" + action + "Response>")
	writeXML(w, http.StatusOK, b.Bytes())
}

// writeASGError writes the awsquery error shape.
func writeASGError(w http.ResponseWriter, reqID string, e *apiError) {
	kind := "Sender"
	if e.Status >= 500 {
		kind = "Receiver"
	}
	var b bytes.Buffer
	b.WriteString(xml.Header)
	b.WriteString("<ErrorResponse xmlns=\"" + asgNamespace + "\">")
	el("Error", tx("Type", kind), tx("Code", e.Code), tx("Message", e.Message)).write(&b)
	tx("RequestId", reqID).write(&b)
	b.WriteString("</ErrorResponse>")
	writeXML(w, e.Status, b.Bytes())
}
