package llmrouter

import (
	"bytes"
	"net/http"

	lru "github.com/hashicorp/golang-lru/v2"
)

// A Responses API request with previous_response_id continues a response
// the provider stored, which only the deployment that made it can find:
// the router remembers which deployment made each response it relayed,
// and sends a continuation there first. Another deployment would answer
// 404, which is then the client's error (the response is not there), not
// the deployment's fault.

// maxResponseHomes bounds the responses remembered, the most recent kept:
// about 100 bytes each.
const maxResponseHomes = 100_000

// responseHome is where a response was made, and the context a
// continuation of it makes the provider read again: the response's input
// (its own predecessors' included) and output, in tokens.
type responseHome struct {
	d       deploymentID
	context int64
}

// responseHomes maps a response id to its home. It is the process's,
// across reloads: a config that drops the deployment simply has no
// candidate of that identity.
var responseHomes = func() *lru.Cache[string, responseHome] {
	c, err := lru.New[string, responseHome](maxResponseHomes)
	if err != nil {
		panic(err) // only for a size below 1
	}
	return c
}()

// rememberResponse records that d made the response id, with usage u.
func rememberResponse(id string, d *deployment, u usage) {
	if id != "" {
		responseHomes.Add(id, responseHome{d.id, addTokens(u.Input, u.Output)})
	}
}

// inputTokens is the request's estimated input: its text
// (openai.Request.InputTokens) and, for a continuation of a response the
// router relayed, that response's context, which the provider reads (and
// bills) again. A continuation of a response it does not know (made
// elsewhere, or forgotten) is estimated from its own text.
func (ex *exchange) inputTokens() int64 {
	n := ex.body.InputTokens()
	if prev := ex.body.PreviousResponseID; prev != "" && ex.ep == responsesEndpoint {
		if home, ok := responseHomes.Peek(prev); ok {
			n = addTokens(n, home.context)
		}
	}
	return n
}

// homeFirst moves the deployment that made the response a request
// continues to the front of its candidates, when it is one of them.
func (ex *exchange) homeFirst(candidates []*deployment) {
	prev := ex.body.PreviousResponseID
	if ex.ep != responsesEndpoint || prev == "" {
		return
	}
	home, ok := responseHomes.Get(prev)
	if !ok {
		return
	}
	for i, d := range candidates {
		if d.id == home.d {
			copy(candidates[1:i+1], candidates[:i])
			candidates[0] = d
			return
		}
	}
}

// namesRequestResource reports whether an error answer is about something
// only the request names (the stored response it continues), rather than
// about the deployment: a 404 that mentions previous_response_id or the
// id itself.
func (ex *exchange) namesRequestResource(status int, body []byte) bool {
	prev := ex.body.PreviousResponseID
	return status == http.StatusNotFound && prev != "" &&
		(bytes.Contains(body, []byte(prev)) || bytes.Contains(body, []byte("previous_response")))
}
