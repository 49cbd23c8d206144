// Package mockllm is a test-only, fault-injecting mock of an OpenAI-compatible
// LLM upstream. It speaks the real OpenAI wire format for chat completions,
// legacy completions and the Responses API (each plain and SSE streaming),
// embeddings, the model list and single models, with the headers providers
// send (X-Request-Id, Openai-Version, X-Ratelimit-Remaining-Requests). It
// produces deterministic token counts, records every request it receives
// and can be told, per upstream model id, to answer with errors
// (optionally echoing the request headers), delays, hangs, TCP resets,
// malformed, empty, truncated or mistyped bodies, broken or stalled streams
// and error events inside a 200 stream.
//
// Every wait inside the handler is bounded by the client going away, and the
// open-ended waits (Hang, StallBeforeFirstChunk, HoldAfterChunks,
// HoldAfterDone) hijack the HTTP/1 connection first, so closing an
// httptest.Server or shutting down an http.Server that wraps a Server never
// blocks on them.
package mockllm

import (
	"bytes"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"maps"
	"math"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"
)

// Created is the fixed "created" timestamp used in every response.
const Created = 1700000000

// DefaultChunks is the number of content chunks (stream) or words
// (non-stream) in an answer when Behavior.Chunks is zero.
const DefaultChunks = 10

const (
	maxBodyBytes    = 64 << 20
	canceledBufSize = 1024
)

// Behavior shapes the responses for one upstream model id (the request body's
// "model" field). The zero value is a healthy upstream that answers instantly.
//
// Behavior has a custom JSON form (see UnmarshalJSON) so it can be posted to
// the control endpoint of cmd/mockllm with durations such as "50ms".
type Behavior struct {
	// Status, when non-zero and not 200, makes the mock answer with this
	// status and an OpenAI error envelope (or Body if set).
	Status int
	// RetryAfter is sent as the Retry-After header (with any Status).
	RetryAfter string
	// Body is sent verbatim instead of the default body, with Status or alone
	// with 200. Such responses are not counted in Served.
	Body string
	// Echo makes the error envelope of a non-200 Status echo the request
	// headers in its message, as some providers do in validation errors:
	// "Invalid request. Headers: Authorization: Bearer sk-...; Content-Type:
	// application/json; ..." (every request header and Host, sorted by name,
	// "Name: value" joined with "; "). The ErrorEvent message echoes them
	// too. Every answer of the behavior (healthy ones and Body included) also
	// carries the request's Authorization value in the X-Echo-Authorization
	// response header, so header scrubbing can be tested.
	Echo bool
	// ContentType, when set, overrides the Content-Type of every answer the
	// behavior shapes (Body, EmptyBody, error envelopes, Malformed, healthy
	// answers). A stream request gets a healthy SSE stream only if it names a
	// text/event-stream type; otherwise it gets the complete non-stream JSON
	// answer (as if "stream" were ignored) under that Content-Type. Healthy
	// answers are still counted in Served.
	ContentType string
	// EmptyBody makes the mock answer Status (200 when zero) with an empty
	// body and Content-Length: 0. It wins over Body. Not counted in Served.
	EmptyBody bool
	// TruncateAfter (non-stream only), when positive and shorter than the
	// healthy JSON body, sends only the body's first TruncateAfter bytes and
	// declares that as the Content-Length, so the client reads a complete but
	// cut body. Not counted in Served.
	TruncateAfter int
	// ErrorEvent (stream only) sends an error inside the 200 stream and then
	// ends it cleanly without [DONE], as OpenAI-compatible providers do: for
	// chat right after the role chunk (ErrorEventAfterChunks: later), for legacy completions as the first
	// event, data: {"error":{"message":"The server had an error while
	// processing your request.","type":"server_error","param":null,
	// "code":null}}; for the Responses API "event: error" with data
	// {"type":"error","code":"server_error","message":...,"param":null,
	// "sequence_number":3} right after its output's first event
	// (response.output_item.added, after response.created and
	// response.in_progress). Not counted in Served.
	ErrorEvent bool
	// ErrorEventAfterChunks (chat streams only), with ErrorEvent, when
	// positive, sends the error event after this many content chunks
	// instead of right after the role chunk: a stream that fails once its
	// answer has begun.
	ErrorEventAfterChunks int
	// Latency is waited before the response headers are sent; the wait ends
	// early if the client goes away.
	Latency time.Duration
	// TailShare is the share (0..1) of requests that wait TailLatency
	// instead of Latency: a latency distribution with a long tail.
	TailShare   float64
	TailLatency time.Duration
	// BodyDelay, with Body (or EmptyBody), is waited between sending the
	// headers and the body: a slow answer whose status arrives at once.
	BodyDelay time.Duration
	// Hang makes the mock never answer; the handler returns only when the
	// client goes away.
	Hang bool
	// Reset makes the mock hijack the connection and close it with a TCP RST
	// without sending anything.
	Reset bool
	// Malformed makes the mock answer 200 with a body that is not valid JSON
	// (non-stream) or an SSE event whose data is not valid JSON (stream).
	Malformed bool
	// StallBeforeFirstChunk (stream only) sends 200 and the SSE headers, then
	// nothing until the client goes away.
	StallBeforeFirstChunk bool
	// BreakAfterChunks (stream only), when positive, aborts the connection
	// abruptly (TCP RST) right after this many content chunks; no [DONE].
	BreakAfterChunks int
	// EndAfterChunks (stream only), when positive, ends the response
	// cleanly (a complete chunked body) right after this many content
	// chunks: a stream cut short with no [DONE] and no error. Not counted
	// in Served.
	EndAfterChunks int
	// HoldAfterChunks (stream only), when positive, stops sending after this
	// many content chunks and waits until the client goes away: a mid-stream
	// stall (the connection stays open, no more bytes, no [DONE]).
	HoldAfterChunks int
	// HoldAfterDone (stream only) sends the whole stream, its last event
	// ([DONE], or the Responses API's response.completed) included, then
	// keeps the response open (no end of the chunked body) until the
	// client goes away. Counted in Served: the answer is complete.
	HoldAfterDone bool
	// EndDelay (stream only) is waited after the stream's last event, before
	// the response ends (the chunked body's last chunk): a provider whose
	// end of response trails its stream.
	EndDelay time.Duration
	// ChunkDelay (stream only) is waited before each content chunk and before
	// the finishing chunk.
	ChunkDelay time.Duration
	// ChunkPadding (chat streams only) appends this many dots to the text
	// of each content chunk: events large enough to fill socket buffers,
	// so that a slow reader makes the sender wait.
	ChunkPadding int
	// Chunks is the number of content chunks in a stream or words in a
	// non-stream answer (also the completion token count); 0 means
	// DefaultChunks. A smaller positive max_tokens (max_completion_tokens,
	// max_output_tokens for the Responses API) in the request wins.
	Chunks int
	// CachedTokens is reported as usage.prompt_tokens_details.cached_tokens
	// (usage.input_tokens_details.cached_tokens for the Responses API).
	CachedTokens int
	// PythonJSON makes every JSON document the behavior writes (non-stream
	// answers, the data of every stream event including the usage chunk and
	// the Responses API events, error envelopes, Malformed bodies) use the
	// separators of Python's json.dumps defaults, ", " and ": ", as Python
	// providers do: {"id": "x", "usage": {"prompt_tokens": 3, ...}}. Strings
	// are unchanged; Body is still sent verbatim. Healthy answers are still
	// counted in Served.
	PythonJSON bool
	// WordVectors, when positive, makes the embeddings of the model
	// bag-of-words vectors of WordVectors dimensions (see WordVector)
	// instead of the default 8-dimensional pseudo-random ones: texts that
	// share words (or word stems: "parcel"/"parcels", "ship"/"shipped") get
	// close vectors, so a semantic cache can be tested against a mock that
	// answers paraphrases with similar embeddings. A token id array input is
	// embedded as the text of its ids ("[1 2 3]"). Usage is counted as for
	// the default embeddings, and the faults (Latency, Hang, Status, ...)
	// apply as to any embeddings request.
	WordVectors int
	// Times, when positive, applies this behavior to the next Times requests
	// for the model only, after which the model reverts to the default
	// behavior (healthy unless SetDefault was used). 0 means until changed.
	Times int
}

// Request is one request as the mock received it. It is recorded for every
// request, faulty ones included, before any fault is applied.
type Request struct {
	// Method and Path are the HTTP method and URL path.
	Method, Path string
	// Proto is the protocol the request came in, e.g. "HTTP/2.0".
	Proto string
	// Header is a copy of the request headers.
	Header http.Header
	// Body is the raw request body.
	Body []byte
	// Model is the body's "model" field ("" if absent or not JSON); for
	// GET …/models/{id} it is the id from the path.
	Model string
	// Stream is the body's "stream" field.
	Stream bool
	// IncludeUsage is the body's stream_options.include_usage field.
	IncludeUsage bool
}

// Usage is the usage the mock reported in successful, complete responses for
// one model, summed up. Requests counts those responses.
type Usage struct{ Prompt, Completion, Cached, Requests int }

type entry struct {
	b    Behavior
	left int
}

// Server is the mock upstream; it is an http.Handler. Use New to create one.
// All methods are safe for concurrent use.
type Server struct {
	once     sync.Once
	canceled chan string
	arrived  chan string
	nextID   atomic.Int64
	tag      string // in this server's response ids, so that two mocks never make the same one

	mu         sync.Mutex
	requireKey string
	def        Behavior
	behaviors  map[string]*entry
	known      map[string]struct{}
	requests   []Request
	counts     map[string]int // requests per model, kept even when not recording
	total      int            // requests since New or Reset: the x-request-id's number
	noRecord   bool           // SetRecord(false): counts only
	served     map[string]Usage
	responses  map[string]struct{} // the ids of the responses it made
}

// New returns a healthy mock with no API key requirement.
func New() *Server {
	s := &Server{}
	s.init()
	return s
}

func (s *Server) init() {
	s.once.Do(func() {
		s.canceled = make(chan string, canceledBufSize)
		s.arrived = make(chan string, canceledBufSize)
		s.mu.Lock()
		s.behaviors = map[string]*entry{}
		s.known = map[string]struct{}{}
		s.counts = map[string]int{}
		s.served = map[string]Usage{}
		s.responses = map[string]struct{}{}
		var tag [3]byte
		_, _ = rand.Read(tag[:])
		s.tag = hex.EncodeToString(tag[:]) + "_"
		s.mu.Unlock()
	})
}

// SetRequireKey makes every request require "Authorization: Bearer <key>";
// other requests get 401 with an invalid_api_key error envelope. An empty key
// turns the check off. The key survives Clear and Reset.
func (s *Server) SetRequireKey(key string) {
	s.init()
	s.mu.Lock()
	s.requireKey = key
	s.mu.Unlock()
}

// Set installs b for requests whose body names model. It replaces any
// previous behavior for that model and restarts its Times count.
func (s *Server) Set(model string, b Behavior) {
	s.init()
	s.mu.Lock()
	s.behaviors[model] = &entry{b: b, left: b.Times}
	s.known[model] = struct{}{}
	s.mu.Unlock()
}

// SetDefault installs b for every model without a behavior of its own (and
// for models whose Times ran out). Times is ignored for the default.
// Clear and Reset restore the healthy zero default.
func (s *Server) SetDefault(b Behavior) {
	s.init()
	b.Times = 0
	s.mu.Lock()
	s.def = b
	s.mu.Unlock()
}

// Clear puts all models back to healthy (per-model behaviors and the default
// are dropped). Recorded requests and served usage are kept.
func (s *Server) Clear() {
	s.init()
	s.mu.Lock()
	s.behaviors = map[string]*entry{}
	s.def = Behavior{}
	s.mu.Unlock()
}

// Reset is Clear plus forgetting recorded requests, served usage and seen
// models; it also drains the Canceled channel.
func (s *Server) Reset() {
	s.init()
	s.mu.Lock()
	s.behaviors = map[string]*entry{}
	s.def = Behavior{}
	s.known = map[string]struct{}{}
	s.requests = nil
	s.counts = map[string]int{}
	s.total = 0
	s.served = map[string]Usage{}
	s.mu.Unlock()
	for {
		select {
		case <-s.canceled:
		case <-s.arrived:
		default:
			return
		}
	}
}

// SetRecord turns the recording of requests (Requests, RequestsFor) on,
// the default, or off: a mock serving a benchmark gets millions of
// requests, and keeping each one's headers and body grew its heap without
// bound, its garbage collection taking CPU from the load it measures.
// RequestCounts is kept either way.
func (s *Server) SetRecord(on bool) {
	s.init()
	s.mu.Lock()
	s.noRecord = !on
	s.mu.Unlock()
}

// RequestCounts returns the number of requests received per model (the
// model the request body names; "" for none), recorded or not.
func (s *Server) RequestCounts() map[string]int {
	s.init()
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.counts)
}

// Requests returns a copy of all recorded requests in arrival order.
func (s *Server) Requests() []Request {
	return s.filter(func(Request) bool { return true })
}

// RequestsFor returns a copy of the recorded requests for model, in arrival
// order.
func (s *Server) RequestsFor(model string) []Request {
	return s.filter(func(r Request) bool { return r.Model == model })
}

func (s *Server) filter(keep func(Request) bool) []Request {
	s.init()
	s.mu.Lock()
	defer s.mu.Unlock()
	out := []Request{}
	for _, r := range s.requests {
		if keep(r) {
			r.Header = r.Header.Clone()
			r.Body = bytes.Clone(r.Body)
			out = append(out, r)
		}
	}
	return out
}

// Served returns the usage summed over the successful, complete responses
// served for model: a non-stream 200 whose body was fully written, or a
// stream that reached [DONE] (response.completed for the Responses API).
// Chat completions, legacy completions and Responses API answers count
// prompt/input tokens as Prompt and completion/output tokens as Completion;
// embeddings count their input tokens as Prompt.
func (s *Server) Served(model string) Usage {
	s.init()
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.served[model]
}

// Canceled receives the model id of every request whose client went away
// before the mock finished answering it. It is buffered; when full, further
// ids are dropped rather than blocking the handler.
func (s *Server) Canceled() <-chan string {
	s.init()
	return s.canceled
}

// Arrived receives the model id of every request as soon as it is recorded,
// before any behavior applies: a test can act while the mock holds a
// request. Buffered like Canceled; Reset drains it.
func (s *Server) Arrived() <-chan string {
	s.init()
	return s.arrived
}

// PromptTokens returns the deterministic prompt token count the mock reports
// for a chat completion request body: the number of whitespace-separated
// words in all string "content" fields of "messages" (and in the "text" of
// content parts given as an array) plus 3 per message. It returns 0 for a
// body that is not valid JSON.
func PromptTokens(body []byte) int {
	var req struct {
		Messages []json.RawMessage `json:"messages"`
	}
	if json.Unmarshal(body, &req) != nil {
		return 0
	}
	return messageTokens(req.Messages)
}

// CompletionPromptTokens returns the deterministic prompt token count the
// mock reports for a legacy completions request body: the number of
// whitespace-separated words of the "prompt" (a string or an array of
// strings; token id arrays count one per id) plus 3 per prompt. It returns 0
// for a body that is not valid JSON or has no usable prompt.
func CompletionPromptTokens(body []byte) int {
	var req struct {
		Prompt json.RawMessage `json:"prompt"`
	}
	if json.Unmarshal(body, &req) != nil {
		return 0
	}
	n, _ := promptTokens(req.Prompt)
	return n
}

func promptTokens(raw json.RawMessage) (int, bool) {
	ins, ok := embeddingInputs(raw)
	if !ok {
		return 0, false
	}
	n := 0
	for _, in := range ins {
		n += in.tokens + 3
	}
	return n, true
}

// ResponseInputTokens returns the deterministic input token count the mock
// reports for a Responses API request body: the number of
// whitespace-separated words of the "instructions" and of all input text,
// plus 3 per input item. A string "input" counts as one item; an array item's
// "content" is a string or an array of parts whose "text" is counted. It
// returns 0 for a body that is not valid JSON.
func ResponseInputTokens(body []byte) int {
	var req struct {
		Input        json.RawMessage `json:"input"`
		Instructions json.RawMessage `json:"instructions"`
	}
	if json.Unmarshal(body, &req) != nil {
		return 0
	}
	n, _ := inputTokens(req.Input, req.Instructions)
	return n
}

func inputTokens(input, instructions json.RawMessage) (int, bool) {
	n := 0
	var instr string
	if json.Unmarshal(instructions, &instr) == nil {
		n += len(strings.Fields(instr))
	}
	var str string
	if json.Unmarshal(input, &str) == nil {
		return n + len(strings.Fields(str)) + 3, true
	}
	var items []json.RawMessage
	if json.Unmarshal(input, &items) != nil || items == nil {
		return n, false
	}
	return n + messageTokens(items), true
}

func messageTokens(msgs []json.RawMessage) int {
	n := 0
	for _, raw := range msgs {
		n += 3
		var m struct {
			Content json.RawMessage `json:"content"`
		}
		if json.Unmarshal(raw, &m) != nil {
			continue
		}
		var str string
		if json.Unmarshal(m.Content, &str) == nil {
			n += len(strings.Fields(str))
			continue
		}
		var parts []struct {
			Text string `json:"text"`
		}
		if json.Unmarshal(m.Content, &parts) == nil {
			for _, p := range parts {
				n += len(strings.Fields(p.Text))
			}
		}
	}
	return n
}

// take returns the behavior for model, consuming one use of a Times-limited
// behavior.
func (s *Server) take(model string) Behavior {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.behaviors[model]
	if !ok {
		return s.def
	}
	if e.b.Times > 0 {
		e.left--
		if e.left <= 0 {
			delete(s.behaviors, model)
		}
	}
	return e.b
}

func (s *Server) addServed(model string, u Usage) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := s.served[model]
	cur.Prompt += u.Prompt
	cur.Completion += u.Completion
	cur.Cached += u.Cached
	cur.Requests += u.Requests
	s.served[model] = cur
}

func (u Usage) neg() Usage {
	return Usage{-u.Prompt, -u.Completion, -u.Cached, -u.Requests}
}

func (s *Server) authorized(r *http.Request) bool {
	s.mu.Lock()
	key := s.requireKey
	s.mu.Unlock()
	if key == "" {
		return true
	}
	scheme, tok, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	return ok && strings.EqualFold(scheme, "Bearer") &&
		subtle.ConstantTimeCompare([]byte(strings.TrimSpace(tok)), []byte(key)) == 1
}

// sniffed is what sniff reads from a body.
type sniffed struct {
	model                string
	stream, includeUsage bool
}

var sniffs memo[sniffed]

// sniff extracts model/stream/include_usage leniently, for recording.
func sniff(body []byte) (model string, stream, includeUsage bool) {
	r := sniffs.get(body, func(body []byte) (r sniffed) {
		var m map[string]json.RawMessage
		if json.Unmarshal(body, &m) != nil {
			return r
		}
		_ = json.Unmarshal(m["model"], &r.model)
		_ = json.Unmarshal(m["stream"], &r.stream)
		var so struct {
			IncludeUsage bool `json:"include_usage"`
		}
		_ = json.Unmarshal(m["stream_options"], &so)
		r.includeUsage = so.IncludeUsage
		return r
	})
	return r.model, r.stream, r.includeUsage
}

// modelPathID returns the {id} of a …/models/{id} path, or "". The id is
// everything after the first "/models/", so ids with slashes work.
func modelPathID(p string) string {
	_, id, ok := strings.Cut(p, "/models/")
	if !ok {
		return ""
	}
	return id
}

// ServeHTTP serves POST …/chat/completions, POST …/completions,
// POST …/responses, POST …/embeddings, GET …/models and GET …/models/{id},
// applying the behavior configured for the body's model (the path's id for
// GET …/models/{id}).
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.init()
	body, readErr := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	p := r.URL.Path
	var want string
	var serve func(*call, []byte)
	switch {
	case strings.HasSuffix(p, "/chat/completions"):
		want, serve = http.MethodPost, (*call).chat
	case strings.HasSuffix(p, "/completions"):
		want, serve = http.MethodPost, (*call).completions
	case strings.HasSuffix(p, "/responses"):
		want, serve = http.MethodPost, (*call).responses
	case strings.HasSuffix(p, "/embeddings"):
		want, serve = http.MethodPost, (*call).embeddings
	case strings.HasSuffix(p, "/models"):
		want, serve = http.MethodGet, (*call).models
	case modelPathID(p) != "":
		want, serve = http.MethodGet, (*call).retrieveModel
	}
	rec := Request{Method: r.Method, Path: p, Proto: r.Proto, Header: r.Header.Clone(), Body: body}
	rec.Model, rec.Stream, rec.IncludeUsage = sniff(body)
	fromPath := serve != nil && want == http.MethodGet && !strings.HasSuffix(p, "/models")
	if fromPath {
		// A model id from the path is not "seen": GET …/models/{id} must
		// not make an unknown model known.
		rec.Model = modelPathID(p)
	}
	s.mu.Lock()
	s.counts[rec.Model]++
	s.total++
	n := s.total
	if !s.noRecord {
		s.requests = append(s.requests, rec)
	}
	if rec.Model != "" && !fromPath {
		s.known[rec.Model] = struct{}{}
	}
	s.mu.Unlock()
	// Headers a provider sends with every answer (OpenAI: x-request-id,
	// openai-version, the x-ratelimit-* family and more): what a gateway
	// copies, and how large its response header map gets, are a real
	// provider's.
	h := w.Header()
	h.Set("X-Request-Id", "req_mock_"+strconv.Itoa(n))
	h.Set("Openai-Version", "2020-10-01")
	h.Set("X-Ratelimit-Remaining-Requests", "9999")
	h.Set("Openai-Processing-Ms", "3")
	// and what a gateway must not relay: the provider's account, its
	// cookies and its infrastructure
	h.Set("Openai-Organization", "org-mock-provider-account")
	h.Set("Set-Cookie", "__cf_bm=mock-provider-cookie; path=/; HttpOnly")
	h.Set("Alt-Svc", `h3=":443"; ma=86400`)
	h.Set("Server", "mock-provider-edge")
	select {
	case s.arrived <- rec.Model:
	default:
	}

	c := &call{s: s, w: w, r: r, rc: http.NewResponseController(w), model: rec.Model}
	if readErr != nil {
		var tooBig *http.MaxBytesError
		if errors.As(readErr, &tooBig) {
			c.writeError(http.StatusRequestEntityTooLarge, "Request body too large.", "invalid_request_error", "request_too_large", "")
			return
		}
		if r.Context().Err() != nil {
			c.gone()
			return
		}
		c.writeError(http.StatusBadRequest, "Could not read the request body.", "invalid_request_error", nil, "")
		return
	}
	if !s.authorized(r) {
		c.writeError(http.StatusUnauthorized, "Incorrect API key provided", "invalid_request_error", "invalid_api_key", "")
		return
	}

	if serve == nil {
		c.writeError(http.StatusNotFound,
			fmt.Sprintf("Unknown request URL: %s %s. Please check the URL for typos.", r.Method, p),
			"invalid_request_error", "unknown_url", "")
		return
	}
	if r.Method != want {
		w.Header().Set("Allow", want)
		c.writeError(http.StatusMethodNotAllowed,
			fmt.Sprintf("Method %s is not allowed for %s; use %s.", r.Method, p, want),
			"invalid_request_error", "method_not_allowed", "")
		return
	}
	serve(c, body)
}

// call is the per-request state.
type call struct {
	s        *Server
	w        http.ResponseWriter
	r        *http.Request
	rc       *http.ResponseController
	model    string
	b        Behavior // the behavior taken for this request (zero before take)
	reported bool
}

// take takes the behavior for model and remembers it.
func (c *call) take(model string) Behavior {
	c.b = c.s.take(model)
	return c.b
}

// ctype is the Content-Type for an answer whose natural type is def.
func (c *call) ctype(def string) string {
	if c.b.ContentType != "" {
		return c.b.ContentType
	}
	return def
}

// sse reports whether a stream request is answered with an SSE stream (and
// not, because of ContentType, with the non-stream JSON answer).
func (c *call) sse() bool {
	ct := strings.ToLower(strings.TrimSpace(c.b.ContentType))
	return ct == "" || strings.HasPrefix(ct, "text/event-stream")
}

// gone reports (once) that the client went away before the answer finished.
func (c *call) gone() {
	if c.reported {
		return
	}
	c.reported = true
	select {
	case c.s.canceled <- c.model:
	default:
	}
}

// sleep waits d or until the client goes away; it reports false in the
// latter case.
func (c *call) sleep(d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-c.r.Context().Done():
		c.gone()
		return false
	}
}

// waitGone blocks until the client goes away. On HTTP/1 it hijacks the
// connection (so server Close/Shutdown need not wait for this handler) and
// reads until the peer closes it; otherwise it waits on the request context.
func (c *call) waitGone() {
	if conn, brw, err := c.rc.Hijack(); err == nil {
		_, _ = io.Copy(io.Discard, brw.Reader)
		_ = conn.Close()
		c.gone()
		return
	}
	<-c.r.Context().Done()
	c.gone()
}

// abort kills the connection with a TCP RST (or, if it cannot be hijacked,
// makes net/http abort the response).
func (c *call) abort() {
	conn, _, err := c.rc.Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	raw := conn
	if nc, ok := conn.(interface{ NetConn() net.Conn }); ok {
		raw = nc.NetConn()
	}
	if tcp, ok := raw.(*net.TCPConn); ok {
		_ = tcp.SetLinger(0)
	}
	_ = raw.Close()
}

// preamble applies the faults common to every endpoint. It returns false if
// the response has been dealt with.
func (c *call) preamble(b Behavior, stream bool) bool {
	latency := b.Latency
	if b.TailShare > 0 && mrand.Float64() < b.TailShare {
		latency = b.TailLatency
	}
	if !c.sleep(latency) {
		return false
	}
	if b.Hang {
		c.waitGone()
		return false
	}
	if b.Reset {
		c.abort()
		return false
	}
	h := c.w.Header()
	if b.RetryAfter != "" {
		h.Set("Retry-After", b.RetryAfter)
	}
	if auth := c.r.Header.Get("Authorization"); b.Echo && auth != "" {
		h.Set("X-Echo-Authorization", auth)
	}
	status := b.Status
	if status == 0 {
		status = http.StatusOK
	}
	if b.Body != "" || b.EmptyBody {
		if stream && status == http.StatusOK {
			h.Set("Content-Type", c.ctype("text/event-stream"))
			h.Set("Cache-Control", "no-cache")
		} else {
			h.Set("Content-Type", c.ctype("application/json"))
		}
		out := b.Body
		if b.EmptyBody {
			out = ""
		}
		h.Set("Content-Length", fmt.Sprint(len(out)))
		c.w.WriteHeader(status)
		if b.BodyDelay > 0 {
			if c.rc.Flush() != nil || !c.sleep(b.BodyDelay) {
				c.gone()
				return false
			}
		}
		if _, err := io.WriteString(c.w, out); err != nil {
			c.gone()
		} else if err := c.rc.Flush(); err != nil {
			c.gone()
		}
		return false
	}
	if status != http.StatusOK {
		msg, typ, code := envelopeFor(status)
		if b.Echo {
			msg += " Headers: " + echoHeaders(c.r)
		}
		c.writeErrorAs(status, c.ctype("application/json"), msg, typ, code)
		return false
	}
	return true
}

// echoHeaders renders the request headers (and Host) the way some providers
// echo them in error messages: "Name: value" sorted by name, joined with
// "; ", several values of one header joined with ", ".
func echoHeaders(r *http.Request) string {
	hdr := r.Header.Clone()
	if r.Host != "" {
		hdr.Set("Host", r.Host)
	}
	names := make([]string, 0, len(hdr))
	for k := range hdr {
		names = append(names, k)
	}
	sort.Strings(names)
	parts := make([]string, len(names))
	for i, k := range names {
		parts[i] = k + ": " + strings.Join(hdr[k], ", ")
	}
	return strings.Join(parts, "; ")
}

func envelopeFor(status int) (msg, typ string, code any) {
	switch {
	case status == http.StatusBadRequest:
		return "Invalid request.", "invalid_request_error", nil
	case status == http.StatusUnauthorized:
		return "Incorrect API key provided", "invalid_request_error", "invalid_api_key"
	case status == http.StatusForbidden:
		return "You are not allowed to access this resource.", "invalid_request_error", "permission_denied"
	case status == http.StatusNotFound:
		return "The model does not exist or you do not have access to it.", "invalid_request_error", "model_not_found"
	case status == http.StatusRequestTimeout:
		return "Request timed out.", "timeout", "timeout"
	case status == http.StatusRequestEntityTooLarge:
		return "Request body too large.", "invalid_request_error", "request_too_large"
	case status == http.StatusTooManyRequests:
		return "Rate limit reached for requests. Please try again later.", "requests", "rate_limit_exceeded"
	case status == http.StatusServiceUnavailable:
		return "The server is overloaded or not ready yet.", "server_error", "server_error"
	case status >= 500:
		return "The server had an error while processing your request. Sorry about that!", "server_error", "server_error"
	case status >= 400:
		return fmt.Sprintf("Request failed with status %d.", status), "invalid_request_error", nil
	default:
		return fmt.Sprintf("Unexpected status %d.", status), "server_error", nil
	}
}

type errorEnvelope struct {
	Error struct {
		Message string `json:"message"`
		Type    string `json:"type"`
		Code    any    `json:"code"`
	} `json:"error"`
}

// writeError writes an OpenAI error envelope. code is a string or nil.
func (c *call) writeError(status int, msg, typ string, code any, retryAfter string) {
	if retryAfter != "" {
		c.w.Header().Set("Retry-After", retryAfter)
	}
	c.writeErrorAs(status, "application/json", msg, typ, code)
}

// writeErrorAs writes an OpenAI error envelope under Content-Type ctype (in
// Python style if the call's behavior has PythonJSON).
func (c *call) writeErrorAs(status int, ctype, msg, typ string, code any) {
	var env errorEnvelope
	env.Error.Message, env.Error.Type, env.Error.Code = msg, typ, code
	js, _ := json.Marshal(env)
	js = append(c.styled(js), '\n')
	h := c.w.Header()
	h.Set("Content-Type", ctype)
	h.Set("Content-Length", fmt.Sprint(len(js)))
	c.w.WriteHeader(status)
	_, _ = c.w.Write(js)
}

// notFoundParam answers 404 with an envelope that names the parameter, as
// OpenAI does for a resource the request names.
func (c *call) notFoundParam(msg, param, code string) {
	js, _ := json.Marshal(map[string]any{"error": map[string]any{
		"message": msg, "type": "invalid_request_error", "param": param, "code": code}})
	js = append(c.styled(js), '\n')
	h := c.w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", fmt.Sprint(len(js)))
	c.w.WriteHeader(http.StatusNotFound)
	_, _ = c.w.Write(js)
}

// madeResponse reports whether the server made the response id.
func (s *Server) madeResponse(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.responses[id]
	return ok
}

func (c *call) badRequest(msg string, code any) {
	c.writeError(http.StatusBadRequest, msg, "invalid_request_error", code, "")
}

// styled is js as the call's behavior writes it: pythonJSON(js) with
// PythonJSON, else js unchanged.
func (c *call) styled(js []byte) []byte {
	if c.b.PythonJSON {
		return pythonJSON(js)
	}
	return js
}

// pythonJSON rewrites compact JSON (as encoding/json.Marshal writes it) with
// the separators of Python's json.dumps defaults: outside strings every ','
// becomes ", " and every ':' becomes ": ". Strings (escaped quotes and
// backslashes included) are copied untouched. It runs in linear time; input
// that is not valid JSON (a Malformed body) is rewritten the same way.
func pythonJSON(js []byte) []byte {
	out := make([]byte, 0, len(js)+len(js)/4)
	inString, escaped := false, false
	for _, ch := range js {
		out = append(out, ch)
		switch {
		case escaped:
			escaped = false
		case inString:
			if ch == '\\' {
				escaped = true
			} else if ch == '"' {
				inString = false
			}
		case ch == '"':
			inString = true
		case ch == ',' || ch == ':':
			out = append(out, ' ')
		}
	}
	return out
}

const badJSON = "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON.)"

// finishJSON writes a complete JSON body (in Python style with PythonJSON),
// records u (unless zero) as served just before the final bytes go out (so a
// client that has parsed the body always observes it) and rolls that back if
// writing fails. TruncateAfter cuts the (styled) body instead, and nothing is
// recorded.
func (c *call) finishJSON(js []byte, u Usage) {
	js = c.styled(js)
	h := c.w.Header()
	h.Set("Content-Type", c.ctype("application/json"))
	if t := c.b.TruncateAfter; t > 0 && t < len(js) {
		h.Set("Content-Length", fmt.Sprint(t))
		c.w.WriteHeader(http.StatusOK)
		if _, err := c.w.Write(js[:t]); err != nil {
			c.gone()
		} else if err := c.rc.Flush(); err != nil {
			c.gone()
		}
		return
	}
	if u == (Usage{}) {
		h.Set("Content-Length", fmt.Sprint(len(js)))
		c.w.WriteHeader(http.StatusOK)
		if _, err := c.w.Write(js); err != nil {
			c.gone()
		} else if err := c.rc.Flush(); err != nil {
			c.gone()
		}
		return
	}
	h.Set("Content-Length", fmt.Sprint(len(js)))
	c.w.WriteHeader(http.StatusOK)
	cut := max(len(js)-2, 0)
	if _, err := c.w.Write(js[:cut]); err != nil {
		c.gone()
		return
	}
	c.s.addServed(c.model, u)
	if _, err := c.w.Write(js[cut:]); err != nil {
		c.s.addServed(c.model, u.neg())
		c.gone()
		return
	}
	if err := c.rc.Flush(); err != nil {
		c.s.addServed(c.model, u.neg())
		c.gone()
	}
}

type usageJSON struct {
	PromptTokens        int `json:"prompt_tokens"`
	CompletionTokens    int `json:"completion_tokens"`
	TotalTokens         int `json:"total_tokens"`
	PromptTokensDetails struct {
		CachedTokens int `json:"cached_tokens"`
	} `json:"prompt_tokens_details"`
}

func makeUsage(p, comp, cached int) *usageJSON {
	u := &usageJSON{PromptTokens: p, CompletionTokens: comp, TotalTokens: p + comp}
	u.PromptTokensDetails.CachedTokens = cached
	return u
}

type message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

type completion struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	Model   string `json:"model"`
	Choices []struct {
		Index        int     `json:"index"`
		Message      message `json:"message"`
		Logprobs     *string `json:"logprobs"`
		FinishReason string  `json:"finish_reason"`
	} `json:"choices"`
	Usage *usageJSON `json:"usage"`
}

type delta struct {
	Role    string  `json:"role,omitempty"`
	Content *string `json:"content,omitempty"`
}

type chunkChoice struct {
	Index        int     `json:"index"`
	Delta        delta   `json:"delta"`
	Logprobs     *string `json:"logprobs"`
	FinishReason *string `json:"finish_reason"`
}

type chunk struct {
	ID                string          `json:"id"`
	Object            string          `json:"object"`
	Created           int64           `json:"created"`
	Model             string          `json:"model"`
	SystemFingerprint *string         `json:"system_fingerprint"`
	Choices           []chunkChoice   `json:"choices"`
	Usage             json.RawMessage `json:"usage,omitempty"`
}

func word(i int) string { return fmt.Sprintf("w%d ", i) }

// answerLength is the number of words (content chunks) of an answer: Chunks
// (DefaultChunks when zero), capped by any smaller positive limit.
func answerLength(b Behavior, limits ...*int) int {
	n := b.Chunks
	if n <= 0 {
		n = DefaultChunks
	}
	for _, mt := range limits {
		if mt != nil && *mt > 0 && *mt < n {
			n = *mt
		}
	}
	return n
}

func answerText(n int) string {
	var text strings.Builder
	for i := range n {
		text.WriteString(word(i))
	}
	return text.String()
}

// errorEventMessage is the message of the ErrorEvent fault.
func (c *call) errorEventMessage() string {
	msg := "The server had an error while processing your request."
	if c.b.Echo {
		msg += " Headers: " + echoHeaders(c.r)
	}
	return msg
}

// chatErrorEvent sends the ErrorEvent fault of chat and legacy completion
// streams: an OpenAI error object as SSE data.
func (c *call) chatErrorEvent() {
	var ev struct {
		Error struct {
			Message string  `json:"message"`
			Type    string  `json:"type"`
			Param   *string `json:"param"`
			Code    *string `json:"code"`
		} `json:"error"`
	}
	ev.Error.Message, ev.Error.Type = c.errorEventMessage(), "server_error"
	js, _ := json.Marshal(ev)
	c.event(js)
}

// chatRequest is what a chat completions request body says, as the mock
// reads it (Go's encoding/json: case-insensitive names, the last duplicate
// wins).
type chatRequest struct {
	badJSON      bool   // the body is not a JSON object of the expected shape
	messagesErr  string // what is wrong with messages, as OpenAI says it ("": nothing)
	messagesCode string // and its error code
	model        string
	stream       bool
	includeUsage bool
	maxTokens    *int // max_tokens, max_completion_tokens: read only
	maxCompl     *int
	promptTokens int
}

var chatRequests memo[chatRequest]

func parseChatRequest(body []byte) (cr chatRequest) {
	var req struct {
		Model         string          `json:"model"`
		Messages      json.RawMessage `json:"messages"`
		Stream        bool            `json:"stream"`
		StreamOptions *struct {
			IncludeUsage bool `json:"include_usage"`
		} `json:"stream_options"`
		MaxTokens           *int `json:"max_tokens"`
		MaxCompletionTokens *int `json:"max_completion_tokens"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		cr.badJSON = true
		return cr
	}
	cr.model, cr.stream = req.Model, req.Stream
	cr.includeUsage = req.StreamOptions != nil && req.StreamOptions.IncludeUsage
	cr.maxTokens, cr.maxCompl = req.MaxTokens, req.MaxCompletionTokens
	var msgs []json.RawMessage
	switch {
	case len(req.Messages) == 0 || json.Unmarshal(req.Messages, &msgs) != nil || msgs == nil:
		cr.messagesErr, cr.messagesCode = "Missing required parameter: 'messages'.", "missing_required_parameter"
	case len(msgs) == 0:
		cr.messagesErr, cr.messagesCode = "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.", "empty_array"
	default:
		cr.promptTokens = messageTokens(msgs)
	}
	return cr
}

func (c *call) chat(body []byte) {
	req := chatRequests.get(body, parseChatRequest)
	if req.badJSON {
		c.badRequest(badJSON, nil)
		return
	}
	b := c.take(req.model)
	if !c.preamble(b, req.stream && c.sse()) {
		return
	}
	if req.messagesErr != "" {
		c.badRequest(req.messagesErr, req.messagesCode)
		return
	}
	n := answerLength(b, req.maxTokens, req.maxCompl)
	prompt := req.promptTokens
	id := fmt.Sprintf("chatcmpl-mock-%d", c.s.nextID.Add(1))
	served := Usage{Prompt: prompt, Completion: n, Cached: b.CachedTokens, Requests: 1}
	if req.stream && c.sse() {
		c.chatStream(id, req.model, n, req.includeUsage, served)
		return
	}

	if b.Malformed {
		c.malformed(fmt.Sprintf(`{"id":%q,"object":"chat.completion","created":%d,"model":%q,"choices":[{"index":0,"message":{"role":"assistant","content":"w0 w1 `, id, Created, req.model))
		return
	}
	resp := completion{ID: id, Object: "chat.completion", Created: Created, Model: req.model,
		Usage: makeUsage(prompt, n, b.CachedTokens)}
	resp.Choices = make([]struct {
		Index        int     `json:"index"`
		Message      message `json:"message"`
		Logprobs     *string `json:"logprobs"`
		FinishReason string  `json:"finish_reason"`
	}, 1)
	resp.Choices[0].Message = message{Role: "assistant", Content: answerText(n)}
	resp.Choices[0].FinishReason = "stop"
	js, _ := json.Marshal(resp)
	c.finishJSON(append(js, '\n'), served)
}

// malformed answers 200 application/json with a body that is not valid JSON
// (cut Python-style JSON with PythonJSON).
func (c *call) malformed(body string) {
	body = string(c.styled([]byte(body)))
	c.w.Header().Set("Content-Type", c.ctype("application/json"))
	c.w.Header().Set("Content-Length", fmt.Sprint(len(body)))
	c.w.WriteHeader(http.StatusOK)
	if _, err := io.WriteString(c.w, body); err != nil {
		c.gone()
	}
}

// event writes one SSE event (data line only) and flushes it.
func (c *call) event(data []byte) bool {
	return c.namedEvent("", data)
}

// namedEvent writes one SSE event, with an "event:" line before the data
// when name is set, and flushes it. With PythonJSON the data is written in
// Python style ("[DONE]" is unchanged by that).
func (c *call) namedEvent(name string, data []byte) bool {
	data = c.styled(data)
	var err error
	if name != "" {
		_, err = fmt.Fprintf(c.w, "event: %s\ndata: %s\n\n", name, data)
	} else {
		_, err = fmt.Fprintf(c.w, "data: %s\n\n", data)
	}
	if err != nil {
		c.gone()
		return false
	}
	if err := c.rc.Flush(); err != nil {
		c.gone()
		return false
	}
	return true
}

// streamPlan is what one streaming endpoint sends; runStream applies the
// stream faults (StallBeforeFirstChunk, Malformed, ChunkDelay,
// BreakAfterChunks, HoldAfterChunks, HoldAfterDone, EndDelay) around it
// and records Served.
type streamPlan struct {
	// malformed sends the Malformed fault's events.
	malformed func()
	// open sends the events before the first content chunk, including the
	// ErrorEvent fault; it reports false when the stream is over.
	open func() bool
	// chunk sends content chunk i.
	chunk func(i int) bool
	// close sends the events after the last content chunk.
	close func() bool
	// final sends the last event; Served is recorded just before it and
	// rolled back if it cannot be written.
	final func() bool
}

func (c *call) runStream(n int, served Usage, p streamPlan) {
	b := c.b
	h := c.w.Header()
	h.Set("Content-Type", c.ctype("text/event-stream"))
	h.Set("Cache-Control", "no-cache")
	c.w.WriteHeader(http.StatusOK)
	if err := c.rc.Flush(); err != nil {
		c.gone()
		return
	}
	if b.StallBeforeFirstChunk {
		c.waitGone()
		return
	}
	if b.Malformed {
		p.malformed()
		return
	}
	if !p.open() {
		return
	}
	for i := range n {
		if !c.sleep(b.ChunkDelay) {
			return
		}
		if !p.chunk(i) {
			return
		}
		sent := i + 1
		if b.BreakAfterChunks > 0 && sent == b.BreakAfterChunks {
			c.abort()
			return
		}
		if b.EndAfterChunks > 0 && sent == b.EndAfterChunks {
			return
		}
		if b.HoldAfterChunks > 0 && sent == b.HoldAfterChunks {
			c.waitGone()
			return
		}
	}
	if !c.sleep(b.ChunkDelay) {
		return
	}
	if !p.close() {
		return
	}
	c.s.addServed(c.model, served)
	if !p.final() {
		c.s.addServed(c.model, served.neg())
		return
	}
	if b.HoldAfterDone {
		c.waitGone()
	}
	c.sleep(b.EndDelay)
}

func (c *call) chatStream(id, model string, n int, includeUsage bool, served Usage) {
	var usageNull json.RawMessage
	if includeUsage {
		usageNull = json.RawMessage("null")
	}
	send := func(d delta, finish *string) bool {
		ch := chunk{ID: id, Object: "chat.completion.chunk", Created: Created, Model: model,
			Choices: []chunkChoice{{Delta: d, FinishReason: finish}}, Usage: usageNull}
		js, _ := json.Marshal(ch)
		return c.event(js)
	}
	c.runStream(n, served, streamPlan{
		malformed: func() {
			bad := fmt.Sprintf(`{"id":%q,"object":"chat.completion.chunk","created":%d,"model":%q,"choices":[{"index":0,"delta":{"content":"w0 "`, id, Created, model)
			if c.event([]byte(bad)) {
				c.event([]byte("[DONE]"))
			}
		},
		open: func() bool {
			empty := ""
			if !send(delta{Role: "assistant", Content: &empty}, nil) {
				return false
			}
			if c.b.ErrorEvent && c.b.ErrorEventAfterChunks <= 0 {
				c.chatErrorEvent()
				return false
			}
			return true
		},
		chunk: func(i int) bool {
			w := word(i) + strings.Repeat(".", c.b.ChunkPadding)
			if !send(delta{Content: &w}, nil) {
				return false
			}
			if c.b.ErrorEvent && c.b.ErrorEventAfterChunks == i+1 {
				c.chatErrorEvent()
				return false
			}
			return true
		},
		close: func() bool {
			stop := "stop"
			if !send(delta{}, &stop) {
				return false
			}
			if includeUsage {
				u, _ := json.Marshal(makeUsage(served.Prompt, served.Completion, served.Cached))
				ch := chunk{ID: id, Object: "chat.completion.chunk", Created: Created, Model: model,
					Choices: []chunkChoice{}, Usage: u}
				js, _ := json.Marshal(ch)
				return c.event(js)
			}
			return true
		},
		final: func() bool { return c.event([]byte("[DONE]")) },
	})
}

// textChoice is a choice of a legacy completion (or of one of its chunks).
type textChoice struct {
	Text         string  `json:"text"`
	Index        int     `json:"index"`
	Logprobs     *string `json:"logprobs"`
	FinishReason *string `json:"finish_reason"`
}

type textCompletion struct {
	ID      string          `json:"id"`
	Object  string          `json:"object"`
	Created int64           `json:"created"`
	Model   string          `json:"model"`
	Choices []textChoice    `json:"choices"`
	Usage   json.RawMessage `json:"usage,omitempty"`
}

// completions serves the legacy completions API (POST …/completions).
func (c *call) completions(body []byte) {
	var req struct {
		Model         string          `json:"model"`
		Prompt        json.RawMessage `json:"prompt"`
		Stream        bool            `json:"stream"`
		StreamOptions *struct {
			IncludeUsage bool `json:"include_usage"`
		} `json:"stream_options"`
		MaxTokens *int `json:"max_tokens"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		c.badRequest(badJSON, nil)
		return
	}
	b := c.take(req.Model)
	if !c.preamble(b, req.Stream && c.sse()) {
		return
	}
	prompt, ok := promptTokens(req.Prompt)
	if !ok {
		c.badRequest("Missing required parameter: 'prompt'.", "missing_required_parameter")
		return
	}
	n := answerLength(b, req.MaxTokens)
	id := fmt.Sprintf("cmpl-mock-%d", c.s.nextID.Add(1))
	served := Usage{Prompt: prompt, Completion: n, Cached: b.CachedTokens, Requests: 1}
	usage, _ := json.Marshal(makeUsage(prompt, n, b.CachedTokens))
	stop := "stop"
	if req.Stream && c.sse() {
		includeUsage := req.StreamOptions != nil && req.StreamOptions.IncludeUsage
		var usageNull json.RawMessage
		if includeUsage {
			usageNull = json.RawMessage("null")
		}
		send := func(choices []textChoice, u json.RawMessage) bool {
			js, _ := json.Marshal(textCompletion{ID: id, Object: "text_completion", Created: Created,
				Model: req.Model, Choices: choices, Usage: u})
			return c.event(js)
		}
		c.runStream(n, served, streamPlan{
			malformed: func() {
				bad := fmt.Sprintf(`{"id":%q,"object":"text_completion","created":%d,"model":%q,"choices":[{"text":"w0 "`, id, Created, req.Model)
				if c.event([]byte(bad)) {
					c.event([]byte("[DONE]"))
				}
			},
			open: func() bool {
				if b.ErrorEvent {
					c.chatErrorEvent()
					return false
				}
				return true
			},
			chunk: func(i int) bool {
				return send([]textChoice{{Text: word(i)}}, usageNull)
			},
			close: func() bool {
				if !send([]textChoice{{FinishReason: &stop}}, usageNull) {
					return false
				}
				if includeUsage {
					return send([]textChoice{}, usage)
				}
				return true
			},
			final: func() bool { return c.event([]byte("[DONE]")) },
		})
		return
	}
	if b.Malformed {
		c.malformed(fmt.Sprintf(`{"id":%q,"object":"text_completion","created":%d,"model":%q,"choices":[{"text":"w0 w1 `, id, Created, req.Model))
		return
	}
	js, _ := json.Marshal(textCompletion{ID: id, Object: "text_completion", Created: Created, Model: req.Model,
		Choices: []textChoice{{Text: answerText(n), FinishReason: &stop}}, Usage: usage})
	c.finishJSON(append(js, '\n'), served)
}

// outputText is an output_text content part of a Responses API message.
type outputText struct {
	Type        string          `json:"type"`
	Text        string          `json:"text"`
	Annotations json.RawMessage `json:"annotations"`
	Logprobs    json.RawMessage `json:"logprobs"`
}

func newOutputText(text string) *outputText {
	return &outputText{Type: "output_text", Text: text,
		Annotations: json.RawMessage("[]"), Logprobs: json.RawMessage("[]")}
}

// outputMessage is a message output item of a Responses API response.
type outputMessage struct {
	Type    string        `json:"type"`
	ID      string        `json:"id"`
	Status  string        `json:"status"`
	Role    string        `json:"role"`
	Content []*outputText `json:"content"`
}

type responseUsage struct {
	InputTokens        int `json:"input_tokens"`
	InputTokensDetails struct {
		CachedTokens int `json:"cached_tokens"`
	} `json:"input_tokens_details"`
	OutputTokens        int `json:"output_tokens"`
	OutputTokensDetails struct {
		ReasoningTokens int `json:"reasoning_tokens"`
	} `json:"output_tokens_details"`
	TotalTokens int `json:"total_tokens"`
}

// responseObject is a Responses API Response. The request's settings are
// echoed where given, else OpenAI's defaults are reported.
type responseObject struct {
	ID                 string          `json:"id"`
	Object             string          `json:"object"`
	CreatedAt          int64           `json:"created_at"`
	Status             string          `json:"status"`
	Background         bool            `json:"background"`
	CompletedAt        *int64          `json:"completed_at"`
	Error              json.RawMessage `json:"error"`
	IncompleteDetails  json.RawMessage `json:"incomplete_details"`
	Instructions       json.RawMessage `json:"instructions"`
	MaxOutputTokens    json.RawMessage `json:"max_output_tokens"`
	Model              string          `json:"model"`
	Output             []outputMessage `json:"output"`
	ParallelToolCalls  json.RawMessage `json:"parallel_tool_calls"`
	PreviousResponseID json.RawMessage `json:"previous_response_id"`
	Reasoning          json.RawMessage `json:"reasoning"`
	ServiceTier        string          `json:"service_tier"`
	Store              json.RawMessage `json:"store"`
	Temperature        json.RawMessage `json:"temperature"`
	Text               json.RawMessage `json:"text"`
	ToolChoice         json.RawMessage `json:"tool_choice"`
	Tools              json.RawMessage `json:"tools"`
	TopP               json.RawMessage `json:"top_p"`
	Truncation         json.RawMessage `json:"truncation"`
	Usage              *responseUsage  `json:"usage"`
	User               json.RawMessage `json:"user"`
	Metadata           json.RawMessage `json:"metadata"`
}

// responseEvent is one Responses API stream event; fields that an event type
// does not have are left zero and omitted.
type responseEvent struct {
	Type           string          `json:"type"`
	SequenceNumber int             `json:"sequence_number"`
	Response       *responseObject `json:"response,omitempty"`
	OutputIndex    *int            `json:"output_index,omitempty"`
	Item           *outputMessage  `json:"item,omitempty"`
	ItemID         string          `json:"item_id,omitempty"`
	ContentIndex   *int            `json:"content_index,omitempty"`
	Part           *outputText     `json:"part,omitempty"`
	Delta          *string         `json:"delta,omitempty"`
	Text           *string         `json:"text,omitempty"`
	Logprobs       json.RawMessage `json:"logprobs,omitempty"`
	Code           string          `json:"code,omitempty"`
	Message        string          `json:"message,omitempty"`
	Param          json.RawMessage `json:"param,omitempty"`
}

// orJSON is raw, or def when raw is absent.
func orJSON(raw json.RawMessage, def string) json.RawMessage {
	if len(raw) == 0 {
		return json.RawMessage(def)
	}
	return raw
}

// responses serves the Responses API (POST …/responses).
func (c *call) responses(body []byte) {
	var req struct {
		Model              string          `json:"model"`
		Input              json.RawMessage `json:"input"`
		Instructions       json.RawMessage `json:"instructions"`
		MaxOutputTokens    *int            `json:"max_output_tokens"`
		Stream             bool            `json:"stream"`
		Temperature        json.RawMessage `json:"temperature"`
		TopP               json.RawMessage `json:"top_p"`
		Metadata           json.RawMessage `json:"metadata"`
		PreviousResponseID json.RawMessage `json:"previous_response_id"`
		ParallelToolCalls  json.RawMessage `json:"parallel_tool_calls"`
		Store              json.RawMessage `json:"store"`
		Text               json.RawMessage `json:"text"`
		ToolChoice         json.RawMessage `json:"tool_choice"`
		Tools              json.RawMessage `json:"tools"`
		Truncation         json.RawMessage `json:"truncation"`
		User               json.RawMessage `json:"user"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		c.badRequest(badJSON, nil)
		return
	}
	var prev string
	if json.Unmarshal(req.PreviousResponseID, &prev) == nil && prev != "" && !c.s.madeResponse(prev) {
		// as OpenAI answers a continuation of a response it does not have
		c.notFoundParam(fmt.Sprintf("Previous response with id '%s' not found.", prev), "previous_response_id", "previous_response_not_found")
		return
	}
	b := c.take(req.Model)
	if !c.preamble(b, req.Stream && c.sse()) {
		return
	}
	input, ok := inputTokens(req.Input, req.Instructions)
	if !ok {
		c.badRequest("Missing required parameter: 'input'.", "missing_required_parameter")
		return
	}
	n := answerLength(b, req.MaxOutputTokens)
	seq := c.s.nextID.Add(1)
	id, msgID := fmt.Sprintf("resp_mock_%s%d", c.s.tag, seq), fmt.Sprintf("msg_mock_%d", seq)
	c.s.mu.Lock()
	c.s.responses[id] = struct{}{}
	c.s.mu.Unlock()
	served := Usage{Prompt: input, Completion: n, Cached: b.CachedTokens, Requests: 1}
	text := answerText(n)

	// response builds the Response object; complete adds the output and
	// usage of the finished answer.
	response := func(complete bool) *responseObject {
		r := &responseObject{ID: id, Object: "response", CreatedAt: Created, Status: "in_progress",
			Error: json.RawMessage("null"), IncompleteDetails: json.RawMessage("null"),
			Instructions: orJSON(req.Instructions, "null"), MaxOutputTokens: orJSON(nil, "null"),
			Model: req.Model, Output: []outputMessage{},
			ParallelToolCalls:  orJSON(req.ParallelToolCalls, "true"),
			PreviousResponseID: orJSON(req.PreviousResponseID, "null"),
			Reasoning:          json.RawMessage(`{"effort":null,"summary":null}`), ServiceTier: "default",
			Store: orJSON(req.Store, "true"), Temperature: orJSON(req.Temperature, "1.0"),
			Text:       orJSON(req.Text, `{"format":{"type":"text"},"verbosity":"medium"}`),
			ToolChoice: orJSON(req.ToolChoice, `"auto"`), Tools: orJSON(req.Tools, "[]"),
			TopP: orJSON(req.TopP, "1.0"), Truncation: orJSON(req.Truncation, `"disabled"`),
			User: orJSON(req.User, "null"), Metadata: orJSON(req.Metadata, "{}")}
		if req.MaxOutputTokens != nil {
			r.MaxOutputTokens = json.RawMessage(fmt.Sprint(*req.MaxOutputTokens))
		}
		if complete {
			done := int64(Created)
			r.Status, r.CompletedAt = "completed", &done
			r.Output = []outputMessage{{Type: "message", ID: msgID, Status: "completed", Role: "assistant",
				Content: []*outputText{newOutputText(text)}}}
			u := &responseUsage{InputTokens: input, OutputTokens: n, TotalTokens: input + n}
			u.InputTokensDetails.CachedTokens = b.CachedTokens
			r.Usage = u
		}
		return r
	}

	if req.Stream && c.sse() {
		next := 0
		send := func(ev responseEvent) bool {
			ev.SequenceNumber = next
			next++
			js, _ := json.Marshal(ev)
			return c.namedEvent(ev.Type, js)
		}
		zero := 0
		c.runStream(n, served, streamPlan{
			malformed: func() {
				c.namedEvent("response.created", fmt.Appendf(nil,
					`{"type":"response.created","sequence_number":0,"response":{"id":%q,"object":"response","created_at":%d,"status":"in_prog`, id, Created))
			},
			open: func() bool {
				if !send(responseEvent{Type: "response.created", Response: response(false)}) ||
					!send(responseEvent{Type: "response.in_progress", Response: response(false)}) ||
					!send(responseEvent{Type: "response.output_item.added", OutputIndex: &zero,
						Item: &outputMessage{Type: "message", ID: msgID, Status: "in_progress", Role: "assistant",
							Content: []*outputText{}}}) {
					return false
				}
				if b.ErrorEvent {
					send(responseEvent{Type: "error", Code: "server_error",
						Message: c.errorEventMessage(), Param: json.RawMessage("null")})
					return false
				}
				return send(responseEvent{Type: "response.content_part.added", ItemID: msgID, OutputIndex: &zero,
					ContentIndex: &zero, Part: newOutputText("")})
			},
			chunk: func(i int) bool {
				w := word(i)
				return send(responseEvent{Type: "response.output_text.delta", ItemID: msgID, OutputIndex: &zero,
					ContentIndex: &zero, Delta: &w, Logprobs: json.RawMessage("[]")})
			},
			close: func() bool {
				return send(responseEvent{Type: "response.output_text.done", ItemID: msgID, OutputIndex: &zero,
					ContentIndex: &zero, Text: &text, Logprobs: json.RawMessage("[]")}) &&
					send(responseEvent{Type: "response.content_part.done", ItemID: msgID, OutputIndex: &zero,
						ContentIndex: &zero, Part: newOutputText(text)}) &&
					send(responseEvent{Type: "response.output_item.done", OutputIndex: &zero,
						Item: &response(true).Output[0]})
			},
			final: func() bool {
				return send(responseEvent{Type: "response.completed", Response: response(true)})
			},
		})
		return
	}
	if b.Malformed {
		c.malformed(fmt.Sprintf(`{"id":%q,"object":"response","created_at":%d,"status":"completed","model":%q,"output":[{"type":"message","content":[{"type":"output_text","text":"w0 w1 `, id, Created, req.Model))
		return
	}
	js, _ := json.Marshal(response(true))
	c.finishJSON(append(js, '\n'), served)
}

func (c *call) embeddings(body []byte) {
	var req struct {
		Model          string          `json:"model"`
		Input          json.RawMessage `json:"input"`
		EncodingFormat string          `json:"encoding_format"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		c.badRequest(badJSON, nil)
		return
	}
	b := c.take(req.Model)
	if !c.preamble(b, false) {
		return
	}
	inputs, ok := embeddingInputs(req.Input)
	if !ok {
		c.badRequest("Missing required parameter: 'input'.", "missing_required_parameter")
		return
	}
	if b.Malformed {
		c.malformed(`{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.1,`)
		return
	}
	type item struct {
		Object    string `json:"object"`
		Index     int    `json:"index"`
		Embedding any    `json:"embedding"` // numbers, or base64 of little-endian float32s as OpenAI sends with encoding_format "base64"
	}
	resp := struct {
		Object string `json:"object"`
		Data   []item `json:"data"`
		Model  string `json:"model"`
		Usage  struct {
			PromptTokens int `json:"prompt_tokens"`
			TotalTokens  int `json:"total_tokens"`
		} `json:"usage"`
	}{Object: "list", Data: []item{}, Model: req.Model}
	tokens := 0
	for i, in := range inputs {
		tokens += in.tokens
		emb := vector(in.key)
		if b.WordVectors > 0 {
			emb = WordVector(in.key, b.WordVectors)
		}
		var out any = emb
		if req.EncodingFormat == "base64" {
			raw := make([]byte, 0, 4*len(emb))
			for _, f := range emb {
				raw = binary.LittleEndian.AppendUint32(raw, math.Float32bits(float32(f)))
			}
			out = base64.StdEncoding.EncodeToString(raw)
		}
		resp.Data = append(resp.Data, item{Object: "embedding", Index: i, Embedding: out})
	}
	resp.Usage.PromptTokens, resp.Usage.TotalTokens = tokens, tokens
	js, _ := json.Marshal(resp)
	c.finishJSON(append(js, '\n'), Usage{Prompt: tokens, Requests: 1})
}

type embInput struct {
	key    string
	tokens int
}

// embeddingInputs accepts a string, an array of strings, an array of token
// ids or an array of arrays of token ids.
func embeddingInputs(raw json.RawMessage) ([]embInput, bool) {
	var str string
	if json.Unmarshal(raw, &str) == nil {
		return []embInput{{str, len(strings.Fields(str))}}, true
	}
	var strs []string
	if json.Unmarshal(raw, &strs) == nil && strs != nil {
		out := make([]embInput, len(strs))
		for i, s := range strs {
			out[i] = embInput{s, len(strings.Fields(s))}
		}
		return out, true
	}
	var ids []int
	if json.Unmarshal(raw, &ids) == nil && ids != nil {
		return []embInput{{fmt.Sprint(ids), len(ids)}}, true
	}
	var idss [][]int
	if json.Unmarshal(raw, &idss) == nil && idss != nil {
		out := make([]embInput, len(idss))
		for i, ids := range idss {
			out[i] = embInput{fmt.Sprint(ids), len(ids)}
		}
		return out, true
	}
	return nil, false
}

// vector derives a deterministic 8-dimensional embedding from key.
func vector(key string) []float64 {
	v := make([]float64, 8)
	for i := range v {
		h := fnv.New64a()
		fmt.Fprintf(h, "%d:%s", i, key)
		v[i] = float64(int64(h.Sum64()%2000001)-1000000) / 1e6
	}
	return v
}

// stopWords are the tokens WordVector ignores: English and Vietnamese
// function words that carry little of a shop question's meaning, so that
// "where is my order" and "where's the order" embed alike. Each
// Vietnamese entry is a syllable, the unit the tokenizer sees ("bao giờ",
// "làm sao", "có thể" are dropped syllable by syllable).
//
// Deliberately absent: negations (not, no, never, "n't" → not, không, chưa,
// đừng, chẳng), so that "I received it" and "I did not receive it" differ;
// question words that change what is asked (why, much, many, mấy, bao lâu's
// "lâu", bao nhiêu's "nhiêu"); and, as no entry has a digit, every token
// bearing one (order numbers, codes, sizes).
var stopWords = setOf(
	// English: articles, pronouns, auxiliaries, prepositions, politeness,
	// the question words that only frame a question, filler verbs
	"a", "an", "the", "i", "me", "my", "we", "our", "us", "you", "your",
	"it", "its", "this", "that", "these", "those", "there",
	"is", "are", "am", "was", "were", "be", "been", "do", "does", "did",
	"have", "has", "had", "can", "could", "will", "would", "should", "shall",
	"to", "of", "for", "in", "on", "at", "by", "with", "from", "about",
	"and", "or", "so", "if", "just", "yet", "still", "any", "some",
	"please", "hi", "hello", "hey", "thanks", "thank",
	"what", "whats", "which", "where", "when", "how",
	"get", "want", "like", "know", "tell",
	// Vietnamese: pronouns (tôi, mình, em, anh, chị, bạn, shop as "you"),
	// copulas and particles, politeness, the frames of "how" (làm sao, như
	// thế nào), "when" (bao giờ, khi nào), "where" (ở đâu), "can" (có thể),
	// tense and aspect markers (đã, sẽ, đang, rồi)
	"tôi", "mình", "em", "anh", "chị", "bạn", "shop", "của", "có", "được",
	"là", "thì", "mà", "và", "cho", "với", "ạ", "à", "ơi", "nhé", "nhỉ",
	"vậy", "hả", "hỏi", "muốn", "xin", "vui", "lòng", "giúp", "hãy",
	"nào", "gì", "bao", "giờ", "khi", "đâu", "ở", "để", "này", "đó",
	"cái", "các", "những", "bị", "đã", "sẽ", "đang", "rồi", "còn",
	"làm", "sao", "như", "thế", "thể",
)

func setOf(words ...string) map[string]bool {
	m := make(map[string]bool, len(words))
	for _, w := range words {
		m[w] = true
	}
	return m
}

// trigramWeight is the weight of each character trigram of a token, next to
// 1 for the token itself: enough for inflections ("parcel"/"parcels") to
// share most of their mass, not so much that unrelated words sharing a
// trigram look alike.
const trigramWeight = 0.5

// WordVector returns a deterministic unit-length bag-of-words embedding of
// text with dims dimensions (nil if dims <= 0), the embeddings of
// Behavior.WordVectors. The text is lower-cased and split into tokens of
// Unicode letters, marks and digits (everything else separates; "n't" becomes
// the token "not", other clitics such as "'s" are dropped), and a small list
// of English and Vietnamese stop words is dropped (articles, pronouns,
// auxiliaries, prepositions, politeness, the question words what, which,
// where, when, how and their Vietnamese frames; never a negation such as
// not, no, never, không, chưa, đừng, nor a token with a digit). Each
// remaining token adds ±1 to one dimension chosen by the FNV-1a hash of the
// token (feature hashing; the sign is another bit of the hash, so
// collisions tend to cancel rather than add up), and each character trigram
// of the token, with "^" marking its start, adds ±0.5 the same way, so that
// words sharing a stem ("parcel"/"parcels", "ship"/"shipped") land close.
// A text with no tokens left embeds as the first unit vector e0.
func WordVector(text string, dims int) []float64 {
	if dims <= 0 {
		return nil
	}
	v := make([]float64, dims)
	add := func(feature string, w float64) {
		h := fnv.New64a()
		_, _ = io.WriteString(h, feature)
		sum := h.Sum64()
		if sum>>63 == 1 {
			w = -w
		}
		v[sum%uint64(dims)] += w
	}
	for _, tok := range wordTokens(text) {
		// prefixes keep the word "buy" and the trigram "buy" apart
		add("w:"+tok, 1)
		// Only the start is marked: "parcel" and "parcels" then share all
		// of the shorter word's trigrams, and a 2-letter token still has one.
		r := []rune("^" + tok)
		for i := 0; i+3 <= len(r); i++ {
			add("g:"+string(r[i:i+3]), trigramWeight)
		}
	}
	var norm float64
	for _, x := range v {
		norm += x * x
	}
	if norm == 0 {
		v[0] = 1
		return v
	}
	norm = math.Sqrt(norm)
	for i := range v {
		v[i] /= norm
	}
	return v
}

// wordTokens splits text into the lower-case tokens WordVector embeds.
func wordTokens(text string) []string {
	words := strings.FieldsFunc(strings.ToLower(text), func(r rune) bool {
		return !unicode.IsLetter(r) && !unicode.IsDigit(r) && !unicode.IsMark(r) && r != '\'' && r != '’'
	})
	var out []string
	keep := func(tok string) {
		// stop words have no digits, so a token with a digit always stays
		if tok != "" && !stopWords[tok] {
			out = append(out, tok)
		}
	}
	for _, w := range words {
		parts := strings.FieldsFunc(w, func(r rune) bool { return r == '\'' || r == '’' })
		if len(parts) == 0 {
			continue
		}
		// "didn't" is "did not": the negation must survive
		if last := len(parts) - 1; last > 0 && parts[last] == "t" && strings.HasSuffix(parts[last-1], "n") {
			stem := strings.TrimSuffix(parts[last-1], "n")
			switch stem {
			case "ca":
				stem = "can"
			case "wo":
				stem = "will"
			case "sha":
				stem = "shall"
			}
			for _, p := range parts[:last-1] {
				keep(p)
			}
			keep(stem)
			keep("not")
			continue
		}
		// other clitics ('s, 'm, 're, 'll, 've, 'd) add nothing
		keep(parts[0])
		for _, p := range parts[1:] {
			switch p {
			case "s", "m", "re", "ll", "ve", "d":
			default:
				keep(p)
			}
		}
	}
	return out
}

func (c *call) models([]byte) {
	c.s.mu.Lock()
	ids := make([]string, 0, len(c.s.known))
	for id := range c.s.known {
		ids = append(ids, id)
	}
	c.s.mu.Unlock()
	sort.Strings(ids)
	type model struct {
		ID      string `json:"id"`
		Object  string `json:"object"`
		Created int64  `json:"created"`
		OwnedBy string `json:"owned_by"`
	}
	resp := struct {
		Object string  `json:"object"`
		Data   []model `json:"data"`
	}{Object: "list", Data: make([]model, 0, len(ids))}
	for _, id := range ids {
		resp.Data = append(resp.Data, model{ID: id, Object: "model", Created: Created, OwnedBy: "mock"})
	}
	js, _ := json.Marshal(resp)
	js = append(js, '\n')
	c.w.Header().Set("Content-Type", "application/json")
	c.w.Header().Set("Content-Length", fmt.Sprint(len(js)))
	c.w.WriteHeader(http.StatusOK)
	_, _ = c.w.Write(js)
}

// retrieveModel serves GET …/models/{id}: the model object for a model the mock has
// seen in a request body or has a behavior set for (the models GET …/models
// lists), else 404 model_not_found. The id's behavior applies (and a Times
// behavior is consumed); nothing is counted in Served.
func (c *call) retrieveModel([]byte) {
	b := c.take(c.model)
	if !c.preamble(b, false) {
		return
	}
	c.s.mu.Lock()
	_, ok := c.s.known[c.model]
	c.s.mu.Unlock()
	if !ok {
		c.writeError(http.StatusNotFound,
			fmt.Sprintf("The model '%s' does not exist or you do not have access to it.", c.model),
			"invalid_request_error", "model_not_found", "")
		return
	}
	if b.Malformed {
		c.malformed(fmt.Sprintf(`{"id":%q,"object":"model","created":`, c.model))
		return
	}
	js, _ := json.Marshal(struct {
		ID      string `json:"id"`
		Object  string `json:"object"`
		Created int64  `json:"created"`
		OwnedBy string `json:"owned_by"`
	}{c.model, "model", Created, "mock"})
	c.finishJSON(append(js, '\n'), Usage{})
}

// behaviorJSON is the JSON form of Behavior.
type behaviorJSON struct {
	Status                int     `json:"status,omitempty"`
	RetryAfter            string  `json:"retry_after,omitempty"`
	Body                  string  `json:"body,omitempty"`
	Latency               string  `json:"latency,omitempty"`
	TailShare             float64 `json:"tail_share,omitempty"`
	TailLatency           string  `json:"tail_latency,omitempty"`
	BodyDelay             string  `json:"body_delay,omitempty"`
	Hang                  bool    `json:"hang,omitempty"`
	Reset                 bool    `json:"reset,omitempty"`
	Malformed             bool    `json:"malformed,omitempty"`
	StallBeforeFirstChunk bool    `json:"stall_before_first_chunk,omitempty"`
	BreakAfterChunks      int     `json:"break_after_chunks,omitempty"`
	EndAfterChunks        int     `json:"end_after_chunks,omitempty"`
	HoldAfterChunks       int     `json:"hold_after_chunks,omitempty"`
	HoldAfterDone         bool    `json:"hold_after_done,omitempty"`
	ChunkDelay            string  `json:"chunk_delay,omitempty"`
	EndDelay              string  `json:"end_delay,omitempty"`
	Chunks                int     `json:"chunks,omitempty"`
	CachedTokens          int     `json:"cached_tokens,omitempty"`
	Times                 int     `json:"times,omitempty"`
	Echo                  bool    `json:"echo,omitempty"`
	ContentType           string  `json:"content_type,omitempty"`
	EmptyBody             bool    `json:"empty_body,omitempty"`
	TruncateAfter         int     `json:"truncate_after,omitempty"`
	ErrorEvent            bool    `json:"error_event,omitempty"`
	ErrorEventAfterChunks int     `json:"error_event_after_chunks,omitempty"`
	PythonJSON            bool    `json:"python_json,omitempty"`
	WordVectors           int     `json:"word_vectors,omitempty"`
}

// MarshalJSON encodes b with snake_case keys, omitting zero fields, and
// durations as Go duration strings (e.g. "50ms").
func (b Behavior) MarshalJSON() ([]byte, error) {
	j := behaviorJSON{Status: b.Status, RetryAfter: b.RetryAfter, Body: b.Body,
		Hang: b.Hang, Reset: b.Reset, Malformed: b.Malformed,
		StallBeforeFirstChunk: b.StallBeforeFirstChunk, BreakAfterChunks: b.BreakAfterChunks, EndAfterChunks: b.EndAfterChunks,
		HoldAfterChunks: b.HoldAfterChunks, HoldAfterDone: b.HoldAfterDone, Chunks: b.Chunks, CachedTokens: b.CachedTokens, Times: b.Times,
		Echo: b.Echo, ContentType: b.ContentType, EmptyBody: b.EmptyBody, TruncateAfter: b.TruncateAfter,
		ErrorEvent: b.ErrorEvent, ErrorEventAfterChunks: b.ErrorEventAfterChunks, PythonJSON: b.PythonJSON, TailShare: b.TailShare, WordVectors: b.WordVectors}
	if b.Latency != 0 {
		j.Latency = b.Latency.String()
	}
	if b.TailLatency != 0 {
		j.TailLatency = b.TailLatency.String()
	}
	if b.BodyDelay != 0 {
		j.BodyDelay = b.BodyDelay.String()
	}
	if b.EndDelay != 0 {
		j.EndDelay = b.EndDelay.String()
	}
	if b.ChunkDelay != 0 {
		j.ChunkDelay = b.ChunkDelay.String()
	}
	return json.Marshal(j)
}

// UnmarshalJSON decodes a JSON object into b. Keys are matched ignoring case
// and underscores, so "retry_after", "retryAfter" and "RetryAfter" are all
// accepted; unknown keys are an error. Durations (latency, chunk_delay) are Go
// duration strings such as "50ms", or integers in nanoseconds.
func (b *Behavior) UnmarshalJSON(data []byte) error {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return err
	}
	var out Behavior
	for k, v := range raw {
		var err error
		switch strings.ToLower(strings.ReplaceAll(k, "_", "")) {
		case "status":
			err = json.Unmarshal(v, &out.Status)
		case "retryafter":
			err = json.Unmarshal(v, &out.RetryAfter)
		case "body":
			err = json.Unmarshal(v, &out.Body)
		case "latency":
			out.Latency, err = parseDuration(v)
		case "tailshare":
			err = json.Unmarshal(v, &out.TailShare)
		case "taillatency":
			out.TailLatency, err = parseDuration(v)
		case "bodydelay":
			out.BodyDelay, err = parseDuration(v)
		case "hang":
			err = json.Unmarshal(v, &out.Hang)
		case "reset":
			err = json.Unmarshal(v, &out.Reset)
		case "malformed":
			err = json.Unmarshal(v, &out.Malformed)
		case "stallbeforefirstchunk":
			err = json.Unmarshal(v, &out.StallBeforeFirstChunk)
		case "breakafterchunks":
			err = json.Unmarshal(v, &out.BreakAfterChunks)
		case "endafterchunks":
			err = json.Unmarshal(v, &out.EndAfterChunks)
		case "holdafterchunks":
			err = json.Unmarshal(v, &out.HoldAfterChunks)
		case "holdafterdone":
			err = json.Unmarshal(v, &out.HoldAfterDone)
		case "chunkdelay":
			out.ChunkDelay, err = parseDuration(v)
		case "enddelay":
			out.EndDelay, err = parseDuration(v)
		case "chunks":
			err = json.Unmarshal(v, &out.Chunks)
		case "cachedtokens":
			err = json.Unmarshal(v, &out.CachedTokens)
		case "times":
			err = json.Unmarshal(v, &out.Times)
		case "echo":
			err = json.Unmarshal(v, &out.Echo)
		case "contenttype":
			err = json.Unmarshal(v, &out.ContentType)
		case "emptybody":
			err = json.Unmarshal(v, &out.EmptyBody)
		case "truncateafter":
			err = json.Unmarshal(v, &out.TruncateAfter)
		case "errorevent":
			err = json.Unmarshal(v, &out.ErrorEvent)
		case "erroreventafterchunks":
			err = json.Unmarshal(v, &out.ErrorEventAfterChunks)
		case "pythonjson":
			err = json.Unmarshal(v, &out.PythonJSON)
		case "wordvectors":
			err = json.Unmarshal(v, &out.WordVectors)
		default:
			return fmt.Errorf("mockllm: unknown behavior field %q", k)
		}
		if err != nil {
			return fmt.Errorf("mockllm: behavior field %q: %w", k, err)
		}
	}
	*b = out
	return nil
}

func parseDuration(v json.RawMessage) (time.Duration, error) {
	var s string
	if json.Unmarshal(v, &s) == nil {
		if s == "" {
			return 0, nil
		}
		return time.ParseDuration(s)
	}
	var n int64
	if err := json.Unmarshal(v, &n); err != nil {
		return 0, errors.New("want a duration string like \"50ms\" or integer nanoseconds")
	}
	return time.Duration(n), nil
}
