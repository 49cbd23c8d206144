package llmrouter

import (
	"bytes"
	"net/http"
	"strings"

	lru "github.com/hashicorp/golang-lru/v2"
)

// A Responses API request with previous_response_id continues a response
// the provider stored, which only the deployment that made it can find:
// the router remembers which deployment made each response it relayed,
// and sends a continuation there first. Another deployment would answer
// 404, which is then the client's error (the response is not there), not
// the deployment's fault.
//
// A request in a conversation (the Conversations API's conversation)
// reads what the provider stored of it, which only the account that made
// it has. Conversations are made past the router (POST /conversations), so
// the first deployment asked may well not have it: its 404 naming the
// conversation fails over to the next candidate without costing the
// deployment its health (a client could otherwise disable every
// deployment by naming conversations nobody has). The deployment that
// answered in a conversation is its home from then on, remembered as a
// response's.

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

// maxResponseIDLen bounds the length of an id remembered, so that the
// map's size in bytes is bounded too: providers' ids are tens of bytes
// ("resp_" and 48 hex digits at OpenAI); a longer one is not an id.
const maxResponseIDLen = 256

// rememberResponse records that d made the response id, with usage u.
func rememberResponse(id string, d *deployment, u usage) {
	if id != "" && len(id) <= maxResponseIDLen {
		responseHomes.Add(id, responseHome{d.id, addTokens(u.Input, u.Output)})
	}
}

// rememberAnswer records the homes of a Responses API answer of d with
// usage u: of its response id, and of the conversation the request is in
// (whose stored context is now what this answer read and wrote).
func (ex *exchange) rememberAnswer(id string, d *deployment, u usage) {
	rememberResponse(id, d, u)
	rememberResponse(ex.body.Conversation, d, u)
}

// continued is the stored response or conversation the request continues
// at the provider, "" for none.
func (ex *exchange) continued() string {
	if ex.ep != responsesEndpoint {
		return ""
	}
	if ex.body.PreviousResponseID != "" {
		return ex.body.PreviousResponseID
	}
	return ex.body.Conversation
}

// inputTokens is the request's estimated input: its text
// (openai.Request.InputTokens) and, for a continuation of a response the
// router relayed, that response's context, which the provider reads (and
// bills) again. Input the router cannot size (a response made elsewhere,
// or forgotten, a conversation, a stored item or prompt, a document)
// counts as context_reserve tokens besides.
func (ex *exchange) inputTokens() int64 {
	n := ex.body.InputTokens()
	unseen := ex.body.UnseenInput
	if prev := ex.continued(); prev != "" {
		home, ok := responseHomes.Peek(prev)
		n = addTokens(n, home.context)
		unseen = unseen || !ok
	}
	if unseen {
		n = addTokens(n, ex.router.ContextReserve)
	}
	return n
}

// withHome is plan p of a request that named no route or model, with the
// deployment that made the response it continues as one more candidate
// when it is not one already (homeFirst then tries it first): the rules
// (or the default route) chose p, and may put a conversation's next turn
// on deployments that cannot have its response. Added here, before the
// budgets' admission, so that its answer is paid for as any candidate's.
func (ex *exchange) withHome(p plan) plan {
	prev := ex.continued()
	if prev == "" {
		return p
	}
	home, ok := responseHomes.Peek(prev)
	if !ok {
		return p
	}
	for _, g := range p {
		for _, d := range g {
			if d.id == home.d {
				return p
			}
		}
	}
	for _, d := range ex.router.deployments {
		if d.id == home.d && d.kind == kindChat {
			// a copy: p is the config's, shared by every request
			return append(p[:len(p):len(p)], []*deployment{d})
		}
	}
	return p
}

// homeFirst moves the deployment that made the response a request
// continues to the front of its candidates, when it is one of them, and
// notes it (home). When it is one of the skipped (cooling down, disabled),
// homeAway notes it: another deployment's 404 for the response then says
// only that the response is not there.
func (ex *exchange) homeFirst(candidates []*deployment, skipped []skipped) {
	prev := ex.continued()
	if prev == "" {
		return
	}
	home, ok := responseHomes.Get(prev)
	if !ok {
		return
	}
	ex.homeKnown = true
	for i, d := range candidates {
		if d.id == home.d {
			copy(candidates[1:i+1], candidates[:i])
			candidates[0] = d
			ex.home = d.id
			return
		}
	}
	for _, s := range skipped {
		if s.d.id == home.d {
			ex.home, ex.homeAway = home.d, home.d
			return
		}
	}
}

// awayFromHome reports whether d is not the home of the response the
// request continues, which is one of its candidates though it cannot
// answer now (skipped, or failed: homeAway): d's 404 for that response is
// no answer to relay.
func (ex *exchange) awayFromHome(d *deployment) bool {
	return ex.homeAway != (deploymentID{}) && d.id != ex.homeAway
}

// namesRequestResource reports whether an error answer is about something
// only the request names (the stored response it continues), rather than
// about the deployment: a 404 that mentions previous_response_id or the
// id itself, as a whole word. The id is the client's text: one that could
// be part of any 404 (a letter, a model's name) would let the client read
// a deployment's own 404, which is otherwise never relayed, and stop its
// failover, so it must look like an id (minResponseIDLen or longer, with
// a digit, as random ids have: not a word of the error's own form such as
// "invalid_request_error" or "model_not_found") and not be the model the
// deployment was asked for nor a part of its name, and be made of an id's
// bytes only.
func (ex *exchange) namesRequestResource(status int, body []byte, upstreamModel string) bool {
	prev := ex.body.PreviousResponseID
	if status != http.StatusNotFound || prev == "" {
		return false
	}
	if bytes.Contains(body, []byte("previous_response")) {
		return true
	}
	return namesID(body, prev, upstreamModel)
}

// namesStored reports whether an error answer is a 404 about stored
// context the request names, by its id as a whole word (under the rules of
// namesRequestResource): the conversation the request is in, a stored
// input item (item_reference) or prompt, or a file, vector store or
// container (openai.Request.Named) in any API; param is the request's
// member it is in ("conversation", "input", "prompt", "messages",
// "tools"), kind what it is ("conversation", "item", "prompt", "file",
// "vector_store", "container"). The conversation, item or file is not at
// that deployment's account, which is the request's doing, not the
// deployment's fault. Every id the request names counts, however many
// (a provider's 404 may name any of them): the body is read once, its
// words looked up among them, so that the cost is linear in both.
func (ex *exchange) namesStored(status int, body []byte, upstreamModel string) (param, kind, id string, ok bool) {
	if status != http.StatusNotFound {
		return "", "", "", false
	}
	type stored struct{ param, kind, id string }
	var ids []stored // in the order they are reported: the first named wins
	if ex.ep == responsesEndpoint {
		if conv := ex.body.Conversation; conv != "" {
			ids = append(ids, stored{"conversation", "conversation", conv})
		}
		for _, id := range ex.body.StoredItems {
			ids = append(ids, stored{"input", "item", id})
		}
		if id := ex.body.StoredPrompt; id != "" {
			ids = append(ids, stored{"prompt", "prompt", id})
		}
	}
	for _, n := range ex.body.Named {
		ids = append(ids, stored{n.Param, n.Kind, n.ID})
	}
	if len(ids) == 0 {
		return "", "", "", false
	}
	index := make(map[string]int, len(ids))
	for i, s := range ids {
		if _, dup := index[s.id]; !dup && looksLikeID(s.id, upstreamModel) {
			index[s.id] = i
		}
	}
	best := -1
	forEachWord(body, func(w []byte) {
		if i, ok := index[string(w)]; ok && (best < 0 || i < best) {
			best = i
		}
	})
	if best < 0 {
		return "", "", "", false
	}
	s := ids[best]
	return s.param, s.kind, s.id, true
}

// forEachWord calls f with each run of id bytes in b (isIDByte) at least
// minResponseIDLen long: the words containsWord finds.
func forEachWord(b []byte, f func(w []byte)) {
	for i := 0; i < len(b); {
		if !isIDByte(b[i]) {
			i++
			continue
		}
		j := i + 1
		for j < len(b) && isIDByte(b[j]) {
			j++
		}
		if j-i >= minResponseIDLen {
			f(b[i:j])
		}
		i = j
	}
}

// namesID reports whether body names id, the client's text, as the id of
// something stored: id looks like one and is not the model's name nor a
// part of it.
func namesID(body []byte, id, upstreamModel string) bool {
	return looksLikeID(id, upstreamModel) && containsWord(body, id)
}

// looksLikeID reports whether id, the client's text, may be matched as the
// id of something stored (namesID): long enough, made of an id's bytes
// with a digit among them, and not the model's name nor a part of it.
func looksLikeID(id, upstreamModel string) bool {
	return len(id) >= minResponseIDLen && isIDWord(id) && strings.ContainsAny(id, "0123456789") &&
		!inModelName(id, upstreamModel)
}

// inModelName reports whether s is the upstream model's name or a part of
// it, in any case: a model id in parts ("accounts/fireworks/models/llama-…",
// "meta-llama/Llama-3.3-70B-Instruct") has words a client can guess as
// well as the whole, and a provider's "model not found" names them.
func inModelName(s, model string) bool {
	return strings.Contains(strings.ToLower(model), strings.ToLower(s))
}

// isIDWord reports whether s is made only of the bytes of an id.
func isIDWord(s string) bool {
	for i := range len(s) {
		if !isIDByte(s[i]) {
			return false
		}
	}
	return true
}

// isIDByte: letters, digits, '_' and '-'.
func isIDByte(c byte) bool {
	return c == '_' || c == '-' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
}

// minResponseIDLen is the shortest previous_response_id found in a 404
// that makes it the client's: providers' ids are long ("resp_" and 48 hex
// digits at OpenAI).
const minResponseIDLen = 12

// containsWord reports whether word occurs in b between bytes that cannot
// be part of an id (letters, digits, '_', '-').
func containsWord(b []byte, word string) bool {
	for from := 0; ; {
		i := bytes.Index(b[from:], []byte(word))
		if i < 0 {
			return false
		}
		i += from
		end := i + len(word)
		if (i == 0 || !isIDByte(b[i-1])) && (end == len(b) || !isIDByte(b[end])) {
			return true
		}
		from = i + 1
	}
}
