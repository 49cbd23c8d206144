package llmrouter

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/maypok86/otter/v2"
)

// Cache answers repeated questions from memory: an exact-match response
// cache of chat and embeddings answers, with stale-if-error.
type Cache struct {
	// TTL is how long an answer is fresh: served without asking a model.
	// Default: 10m.
	TTL caddy.Duration `json:"ttl,omitempty"`

	// MaxSize bounds the memory of stored answers, in bytes; the least
	// valuable are evicted beyond it. Default: 128MB.
	MaxSize int64 `json:"max_size,omitempty"`

	// StaleIfError is how long after TTL an answer is still served when
	// every candidate of a request failed (instead of 503). Default: 24h;
	// negative: never.
	StaleIfError caddy.Duration `json:"stale_if_error,omitempty"`

	// Match lists the routes and models whose requests may be cached, by
	// the route or model they resolved to. Default: every chat and
	// embeddings request.
	Match []string `json:"match,omitempty"`

	// KeyHeaders are request headers whose values are part of the key
	// (e.g. X-Team), besides the body.
	KeyHeaders []string `json:"key_headers,omitempty"`

	// NoStreams keeps streamed answers out of the cache (Caddyfile:
	// `streams off`); streamed requests are still served from JSON
	// answers. Default: false (streams are cached and replayed).
	NoStreams bool `json:"no_streams,omitempty"`
}

const (
	defaultCacheTTL   = 10 * time.Minute
	defaultCacheSize  = 128_000_000
	defaultStaleError = 24 * time.Hour
	// an answer larger than this share of max_size is not stored, so that
	// one answer cannot flush the cache
	maxEntryShare = 16
	entryOverhead = 256 // bytes of bookkeeping per entry, for the weigher
)

// cache results, the `result` label of caddy_llm_router_cache_requests_total
const (
	cacheHit    = "hit"
	cacheMiss   = "miss"
	cacheStale  = "stale"
	cacheBypass = "bypass"
)

// responseCache is a config's cache settings over a shared store.
type responseCache struct {
	ttl, stale time.Duration
	match      map[string]bool
	keyHeaders []string
	streams    bool
	store      *cacheStore
	poolKey    string
}

func newResponseCache(c *Cache) (*responseCache, error) {
	rc := &responseCache{ttl: time.Duration(c.TTL), stale: time.Duration(c.StaleIfError), keyHeaders: c.KeyHeaders, streams: !c.NoStreams}
	if rc.ttl <= 0 {
		rc.ttl = defaultCacheTTL
	}
	if rc.stale == 0 {
		rc.stale = defaultStaleError
	}
	if rc.stale < 0 {
		rc.stale = 0
	}
	if len(c.Match) > 0 {
		rc.match = map[string]bool{}
		for _, m := range c.Match {
			rc.match[m] = true
		}
	}
	size := c.MaxSize
	if size <= 0 {
		size = defaultCacheSize
	}
	rc.poolKey = "cache/" + strconv.FormatInt(size, 10)
	v, _, err := cacheStores.LoadOrNew(rc.poolKey, func() (caddy.Destructor, error) { return newCacheStore(size) })
	if err != nil {
		return nil, err
	}
	rc.store = v.(*cacheStore)
	return rc, nil
}

// release undoes newResponseCache.
func (rc *responseCache) release() { _, _ = cacheStores.Delete(rc.poolKey) }

const (
	typicalEntry      = 4 << 10 // bytes: an answer with its key and entry
	maxInitialEntries = 1 << 16
)

// cacheStores holds the stored answers by size, so that they survive
// reloads; handlers with the same max_size share one store (their keys
// cannot meet: a key includes the upstreams that answer it).
var cacheStores = caddy.NewUsagePool()

// cacheStore is a bounded set of answers, and the requests in flight to
// fill it.
type cacheStore struct {
	entries *otter.Cache[answerKey, *cacheEntry]
	maxSize int64

	mu      sync.Mutex
	flights map[answerKey]*cacheFlight
	saved   []money

	results [4]atomic.Int64 // hit, miss, stale, bypass
}

func newCacheStore(size int64) (*cacheStore, error) {
	entries, err := otter.New(&otter.Options[answerKey, *cacheEntry]{
		MaximumWeight: uint64(size),
		// room for a full store of typical answers (a few KB each) from
		// the start: growing the table on the request path costs more
		InitialCapacity: int(min(size/typicalEntry, maxInitialEntries)),
		Weigher: func(_ answerKey, e *cacheEntry) uint32 {
			return uint32(min(sha256.Size+len(e.body)+e.otherLen()+entryOverhead, 1<<31))
		},
		// No ExpiryCalculator: lookup tells fresh, stale and dead entries
		// apart by age itself, and otter's timer wheel cost a fifth of every
		// Set (1.29 against 1.05 µs with an eviction). An entry past ttl +
		// stale_if_error (24h by default) is then never served but stays
		// until the size bound evicts it, as an entry nobody asks for.
		Executor: func(fn func()) { fn() }, // maintenance on the caller: no goroutine to stop
	})
	if err != nil {
		return nil, err
	}
	return &cacheStore{entries: entries, maxSize: size, flights: map[answerKey]*cacheFlight{}}, nil
}

// Destruct implements caddy.Destructor: the last config using the store
// let go of it.
func (s *cacheStore) Destruct() error {
	s.entries.InvalidateAll()
	return nil
}

// cacheEntry is one stored answer.
type cacheEntry struct {
	stored       time.Time
	fresh, stale time.Duration
	stream       bool   // body is the SSE events of a chat stream, else a JSON answer
	body         []byte // as the provider sent it (a stream's usage chunk included)
	model        string // the deployment that answered
	provider     string
	cost         float64 // what the answer cost, in currency
	currency     string
	other        atomic.Pointer[[]byte] // body in the other form, made on first need and weighed with the entry
}

// cacheFlight is an upstream request that others with the same key wait
// for (single flight).
type cacheFlight struct {
	done  chan struct{}
	entry *cacheEntry // what it stored, nil if nothing
}

// lookup finds key's entry; fresh reports whether it is within its TTL at t.
func (s *cacheStore) lookup(key answerKey, t time.Time) (e *cacheEntry, fresh bool) {
	e, ok := s.entries.GetIfPresent(key)
	if !ok {
		return nil, false
	}
	age := t.Sub(e.stored)
	if age > e.fresh+e.stale {
		return nil, false
	}
	return e, age <= e.fresh
}

// join makes the caller the leader of key's flight, or returns the flight
// to wait for.
func (s *cacheStore) join(key answerKey) (f *cacheFlight, leader bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if f := s.flights[key]; f != nil {
		return f, false
	}
	f = &cacheFlight{done: make(chan struct{})}
	s.flights[key] = f
	return f, true
}

// land ends the leader's flight with what it stored (or nil).
func (s *cacheStore) land(key answerKey, f *cacheFlight, e *cacheEntry) {
	s.mu.Lock()
	delete(s.flights, key)
	s.mu.Unlock()
	f.entry = e
	close(f.done)
}

// put stores an answer, unless it is too large for the store.
func (s *cacheStore) put(key answerKey, e *cacheEntry) bool {
	if int64(len(e.body)) > s.maxSize/maxEntryShare {
		return false
	}
	s.entries.Set(key, e)
	return true
}

func (s *cacheStore) count(result string, saved float64, currency string) {
	switch result {
	case cacheHit:
		s.results[0].Add(1)
	case cacheMiss:
		s.results[1].Add(1)
	case cacheStale:
		s.results[2].Add(1)
	case cacheBypass:
		s.results[3].Add(1)
	}
	if saved > 0 {
		s.mu.Lock()
		s.saved = addMoney(s.saved, currency, saved)
		s.mu.Unlock()
	}
}

// cacheKey is the key of a request: a hash of the endpoint, the upstreams
// its plan names (so that handlers and reloads that route it elsewhere do
// not share answers), the body in a canonical form (members sorted,
// insignificant white space dropped, and without user, stream and
// stream_options, so that a streamed and a non-streamed question share the
// answer) and the key headers. No prompt text is kept. raw must be a valid
// JSON object (parseRequestBody checked it).
func cacheKey(ep endpoint, ns string, raw []byte, header http.Header, keyHeaders []string) answerKey {
	c := canonicalizers.Get().(*canonicalizer)
	defer c.release()
	out := binary.LittleEndian.AppendUint64(c.scratch(0), uint64(ep))
	out = appendString(out, 's', ns)
	for _, name := range keyHeaders {
		out = appendString(out, 'k', name)
		values := header.Values(name)
		out = appendLen(out, 'a', len(values))
		for _, v := range values {
			out = appendString(out, 's', v)
		}
	}
	s := jsonScanner{b: raw}
	s.ws()
	out = c.value(&s, out, 1, true)
	c.bufs[0] = out
	return sha256.Sum256(out)
}

// answerKey is a cache key: a SHA-256, kept as an array rather than a
// string, which would be one more allocation a request.
type answerKey [sha256.Size]byte

// keyExcluded are top-level members that do not change the answer's text.
var keyExcluded = []string{"user", "stream", "stream_options"}

// canonicalizer writes a JSON value in a canonical form, in one pass, to
// be hashed. The encoding is self-delimiting, so that different values
// never write the same bytes: a scalar is 's', its length and its bytes as
// written; an array is 'a', its elements, 'e'; an object is 'o', its
// member count, then its members sorted by name, each as 'k', the name's
// length and the name, then its value: a scalar as above, an object or
// array as 'h' and the SHA-256 of its encoding (a Merkle tree: no byte is
// hashed twice). One buffer and member list are kept per depth, and the
// whole is hashed once (many small writes to a hash cost more than the
// copy).
type canonicalizer struct {
	bufs    [][]byte
	members [][]canonMember
}

type canonMember struct {
	key    []byte
	scalar []byte            // a scalar value, as written
	sum    [sha256.Size]byte // else the digest of the value's encoding
}

var canonicalizers = sync.Pool{New: func() any { return new(canonicalizer) }}

// maxKeptBuffer bounds what a pooled canonicalizer keeps of the buffers a
// large body made it grow.
const maxKeptBuffer = 64 << 10

// scratch is the emptied buffer of depth d.
func (c *canonicalizer) scratch(d int) []byte {
	for len(c.bufs) <= d {
		c.bufs = append(c.bufs, nil)
		c.members = append(c.members, nil)
	}
	return c.bufs[d][:0]
}

func (c *canonicalizer) release() {
	for i, b := range c.bufs {
		if cap(b) > maxKeptBuffer {
			c.bufs[i] = nil
		}
	}
	for i := range c.members {
		clear(c.members[i]) // drop references to the body
		c.members[i] = c.members[i][:0]
	}
	canonicalizers.Put(c)
}

func appendLen(b []byte, tag byte, n int) []byte {
	return binary.AppendUvarint(append(b, tag), uint64(n))
}

func appendString[T string | []byte](b []byte, tag byte, v T) []byte {
	return append(appendLen(b, tag, len(v)), v...)
}

// value appends the value at s.i to out and moves past it; the input is
// known to be valid JSON. Top-level members in keyExcluded are left out.
func (c *canonicalizer) value(s *jsonScanner, out []byte, depth int, top bool) []byte {
	b := s.b
	switch b[s.i] {
	case '{':
		s.i++
		_ = c.scratch(depth) // makes members[depth-1] and bufs[depth]
		members := c.members[depth-1][:0]
		for {
			s.ws()
			if b[s.i] == '}' {
				s.i++
				break
			}
			if b[s.i] == ',' {
				s.i++
				s.ws()
			}
			kstart := s.i
			_ = s.str()
			key := keyName(b[kstart+1 : s.i-1])
			s.ws()
			s.i++ // ':'
			s.ws()
			if top && slices.Contains(keyExcluded, string(key)) {
				_ = s.value(depth)
				continue
			}
			members = append(members, canonMember{key: key})
			m := &members[len(members)-1]
			if ch := b[s.i]; ch != '{' && ch != '[' {
				// a scalar sorts with its own bytes: no digest needed
				start := s.i
				skipScalar(s)
				m.scalar = b[start:s.i]
			} else {
				sub := c.value(s, c.scratch(depth), depth+1, false)
				m.sum = sha256.Sum256(sub)
				c.bufs[depth] = sub
			}
		}
		sortMembers(members)
		out = appendLen(out, 'o', len(members))
		for i := range members {
			m := &members[i]
			out = appendString(out, 'k', m.key)
			if m.scalar != nil {
				out = appendString(out, 's', m.scalar)
			} else {
				out = append(append(out, 'h'), m.sum[:]...)
			}
		}
		c.members[depth-1] = members
	case '[':
		s.i++
		out = append(out, 'a')
		for {
			s.ws()
			if b[s.i] == ']' {
				s.i++
				break
			}
			if b[s.i] == ',' {
				s.i++
				s.ws()
			}
			out = c.value(s, out, depth, false)
		}
		out = append(out, 'e')
	default:
		start := s.i
		skipScalar(s)
		out = appendString(out, 's', b[start:s.i])
	}
	return out
}

// sortMembers sorts an object's members by name. Objects in requests have
// a few members, where an insertion sort beats pdqsort's set-up (pdqsort
// was a fifth of the canonical form's cost in a profile under load).
func sortMembers(members []canonMember) {
	if len(members) > 12 {
		slices.SortFunc(members, func(x, y canonMember) int { return bytes.Compare(x.key, y.key) })
		return
	}
	for i := 1; i < len(members); i++ {
		for j := i; j > 0 && bytes.Compare(members[j-1].key, members[j].key) > 0; j-- {
			members[j-1], members[j] = members[j], members[j-1]
		}
	}
}

// skipScalar moves s past the string, number or literal at s.i, which is
// known to be valid: a string's end is found by IndexByte (the text of the
// messages is most of a body's bytes), not by validating every byte again.
func skipScalar(s *jsonScanner) {
	b := s.b
	if b[s.i] != '"' {
		for s.i < len(b) {
			switch b[s.i] {
			case ',', '}', ']', ' ', '\t', '\n', '\r':
				return
			}
			s.i++
		}
		return
	}
	i := s.i + 1
	for {
		q := i + bytes.IndexByte(b[i:], '"')
		escapes := 0 // backslashes just before the quote: odd escapes it
		for p := q - 1; p >= i && b[p] == '\\'; p-- {
			escapes++
		}
		i = q + 1
		if escapes%2 == 0 {
			s.i = i
			return
		}
	}
}

// cacheControl reads a request's Cache-Control: no-cache skips the lookup
// (the answer still refreshes the entry), no-store neither reads nor
// writes.
func cacheControl(h http.Header) (lookup, store bool) {
	lookup, store = true, true
	for _, v := range h.Values("Cache-Control") {
		for d := range strings.SplitSeq(v, ",") {
			switch strings.ToLower(strings.TrimSpace(d)) {
			case "no-cache":
				lookup = false
			case "no-store":
				lookup, store = false, false
			}
		}
	}
	return lookup, store
}

// bodyFor is key's entry e in the form a request wants: as stored, or
// converted (once) from the other form, which then counts against
// max_size too: the entry is weighed again, unless it was replaced.
func (s *cacheStore) bodyFor(key answerKey, e *cacheEntry, stream bool) ([]byte, error) {
	if stream == e.stream {
		return e.body, nil
	}
	if b := e.other.Load(); b != nil {
		return *b, nil
	}
	b, err := e.convert(stream)
	if err != nil {
		return nil, err
	}
	if e.other.CompareAndSwap(nil, &b) {
		s.entries.ComputeIfPresent(key, func(cur *cacheEntry) (*cacheEntry, otter.ComputeOp) {
			if cur != e {
				return cur, otter.CancelOp
			}
			return e, otter.WriteOp // the weigher sees the other form now
		})
	}
	return *e.other.Load(), nil
}

func (e *cacheEntry) otherLen() int {
	if b := e.other.Load(); b != nil {
		return len(*b)
	}
	return 0
}

// convert makes the entry's answer in the other form.
func (e *cacheEntry) convert(stream bool) ([]byte, error) {
	if stream {
		return chatJSONToStream(e.body)
	}
	return chatStreamToJSON(e.body)
}

// chatJSONToStream turns a chat.completion into the SSE events a stream of
// it would have been: one chunk per choice with the whole message as its
// delta, one with each finish reason, a usage chunk, [DONE].
func chatJSONToStream(body []byte) ([]byte, error) {
	var c struct {
		ID                string          `json:"id"`
		Created           int64           `json:"created"`
		Model             string          `json:"model"`
		SystemFingerprint json.RawMessage `json:"system_fingerprint,omitempty"`
		Choices           []struct {
			Index        int             `json:"index"`
			Message      json.RawMessage `json:"message"`
			Logprobs     json.RawMessage `json:"logprobs,omitempty"`
			FinishReason json.RawMessage `json:"finish_reason"`
		} `json:"choices"`
		Usage json.RawMessage `json:"usage,omitempty"`
	}
	if err := json.Unmarshal(body, &c); err != nil {
		return nil, err
	}
	type choice struct {
		Index        int             `json:"index"`
		Delta        json.RawMessage `json:"delta"`
		Logprobs     json.RawMessage `json:"logprobs"`
		FinishReason json.RawMessage `json:"finish_reason"`
	}
	type chunk struct {
		ID                string          `json:"id"`
		Object            string          `json:"object"`
		Created           int64           `json:"created"`
		Model             string          `json:"model"`
		SystemFingerprint json.RawMessage `json:"system_fingerprint,omitempty"`
		Choices           []choice        `json:"choices"`
		Usage             json.RawMessage `json:"usage,omitempty"`
	}
	var out bytes.Buffer
	emit := func(ch chunk) error {
		ch.ID, ch.Object, ch.Created, ch.Model, ch.SystemFingerprint = c.ID, "chat.completion.chunk", c.Created, c.Model, c.SystemFingerprint
		b, err := json.Marshal(ch)
		if err != nil {
			return err
		}
		out.WriteString("data: ")
		out.Write(b)
		out.WriteString("\n\n")
		return nil
	}
	null := json.RawMessage("null")
	for _, ch := range c.Choices {
		msg, err := deltaOf(ch.Message)
		if err != nil {
			return nil, err
		}
		if err := emit(chunk{Choices: []choice{{Index: ch.Index, Delta: msg, Logprobs: orNull(ch.Logprobs), FinishReason: null}}}); err != nil {
			return nil, err
		}
	}
	for _, ch := range c.Choices {
		if err := emit(chunk{Choices: []choice{{Index: ch.Index, Delta: json.RawMessage("{}"), Logprobs: null, FinishReason: orNull(ch.FinishReason)}}}); err != nil {
			return nil, err
		}
	}
	if len(c.Usage) > 0 && string(c.Usage) != "null" {
		if err := emit(chunk{Choices: []choice{}, Usage: c.Usage}); err != nil {
			return nil, err
		}
	}
	out.WriteString("data: [DONE]\n\n")
	return out.Bytes(), nil
}

// deltaOf is a message as a stream delta: the same members, each tool
// call with the index a stream gives it.
func deltaOf(msg json.RawMessage) (json.RawMessage, error) {
	if len(msg) == 0 || string(msg) == "null" {
		return json.RawMessage("{}"), nil
	}
	if !bytes.Contains(msg, []byte(`"tool_calls"`)) {
		return msg, nil
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(msg, &m); err != nil {
		return nil, err
	}
	var calls []map[string]json.RawMessage
	if err := json.Unmarshal(m["tool_calls"], &calls); err != nil {
		return msg, nil // null or another shape: as it is
	}
	for i, c := range calls {
		c["index"] = json.RawMessage(strconv.Itoa(i))
	}
	b, err := json.Marshal(calls)
	if err != nil {
		return nil, err
	}
	m["tool_calls"] = b
	return json.Marshal(m)
}

func orNull(m json.RawMessage) json.RawMessage {
	if len(m) == 0 {
		return json.RawMessage("null")
	}
	return m
}

// chatStreamToJSON assembles the SSE events of a chat stream into the
// chat.completion they stream: content and refusal concatenated, tool calls
// merged by index, finish reasons and usage kept.
func chatStreamToJSON(events []byte) ([]byte, error) {
	type toolCall struct {
		Index    int    `json:"-"`
		ID       string `json:"id,omitempty"`
		Type     string `json:"type,omitempty"`
		Function struct {
			Name      string `json:"name,omitempty"`
			Arguments string `json:"arguments"`
		} `json:"function"`
	}
	type message struct {
		Role      string     `json:"role"`
		Content   *string    `json:"content"`
		Refusal   *string    `json:"refusal,omitempty"`
		ToolCalls []toolCall `json:"tool_calls,omitempty"`
	}
	type choice struct {
		Index        int             `json:"index"`
		Message      message         `json:"message"`
		Logprobs     json.RawMessage `json:"logprobs"`
		FinishReason json.RawMessage `json:"finish_reason"`
	}
	var out struct {
		ID                string          `json:"id"`
		Object            string          `json:"object"`
		Created           int64           `json:"created"`
		Model             string          `json:"model"`
		SystemFingerprint json.RawMessage `json:"system_fingerprint,omitempty"`
		Choices           []*choice       `json:"choices"`
		Usage             json.RawMessage `json:"usage,omitempty"`
	}
	out.Object = "chat.completion"
	byIndex := map[int]*choice{}
	r := newSSEReader(bytes.NewReader(events))
	defer r.release()
	for {
		ev, err := r.next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		data := eventData(ev)
		if data == nil || bytes.Equal(data, doneData) {
			continue
		}
		var ch struct {
			ID                string          `json:"id"`
			Created           int64           `json:"created"`
			Model             string          `json:"model"`
			SystemFingerprint json.RawMessage `json:"system_fingerprint"`
			Choices           []struct {
				Index int `json:"index"`
				Delta struct {
					Role      string  `json:"role"`
					Content   *string `json:"content"`
					Refusal   *string `json:"refusal"`
					ToolCalls []struct {
						Index int `json:"index"`
						toolCall
					} `json:"tool_calls"`
				} `json:"delta"`
				Logprobs     json.RawMessage `json:"logprobs"`
				FinishReason json.RawMessage `json:"finish_reason"`
			} `json:"choices"`
			Usage json.RawMessage `json:"usage"`
		}
		if err := json.Unmarshal(data, &ch); err != nil {
			return nil, err
		}
		if out.ID == "" {
			out.ID, out.Created, out.Model, out.SystemFingerprint = ch.ID, ch.Created, ch.Model, ch.SystemFingerprint
		}
		if len(ch.Usage) > 0 && string(ch.Usage) != "null" {
			out.Usage = ch.Usage
		}
		for _, d := range ch.Choices {
			c := byIndex[d.Index]
			if c == nil {
				c = &choice{Index: d.Index, Message: message{Role: "assistant"}, Logprobs: json.RawMessage("null"), FinishReason: json.RawMessage("null")}
				byIndex[d.Index] = c
				out.Choices = append(out.Choices, c)
			}
			if d.Delta.Role != "" {
				c.Message.Role = d.Delta.Role
			}
			if d.Delta.Content != nil {
				s := derefOr(c.Message.Content) + *d.Delta.Content
				c.Message.Content = &s
			}
			if d.Delta.Refusal != nil {
				s := derefOr(c.Message.Refusal) + *d.Delta.Refusal
				c.Message.Refusal = &s
			}
			for _, dc := range d.Delta.ToolCalls {
				tc := dc.toolCall
				tc.Index = dc.Index
				i := slices.IndexFunc(c.Message.ToolCalls, func(x toolCall) bool { return x.Index == tc.Index })
				if i < 0 {
					c.Message.ToolCalls = append(c.Message.ToolCalls, tc)
					continue
				}
				t := &c.Message.ToolCalls[i]
				if tc.ID != "" {
					t.ID = tc.ID
				}
				if tc.Type != "" {
					t.Type = tc.Type
				}
				t.Function.Name += tc.Function.Name
				t.Function.Arguments += tc.Function.Arguments
			}
			if len(d.FinishReason) > 0 && string(d.FinishReason) != "null" {
				c.FinishReason = d.FinishReason
			}
		}
	}
	slices.SortFunc(out.Choices, func(a, b *choice) int { return a.Index - b.Index })
	return json.Marshal(out)
}

func derefOr(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// cacheStats are a store's figures for the stats API.
func (s *cacheStore) report() CacheStats {
	cs := CacheStats{MaxBytes: s.maxSize, Entries: int64(s.entries.EstimatedSize()), Bytes: int64(s.entries.WeightedSize()),
		Hits: s.results[0].Load(), Misses: s.results[1].Load(), Stale: s.results[2].Load(), Bypassed: s.results[3].Load()}
	if served := cs.Hits + cs.Stale + cs.Misses; served > 0 {
		cs.HitRatio = float64(cs.Hits+cs.Stale) / float64(served)
	}
	cs.HitRatioHuman = humanPercent(cs.HitRatio)
	cs.BytesHuman = fmt.Sprintf("%s of %s", humanBytes(cs.Bytes), humanBytes(cs.MaxBytes))
	s.mu.Lock()
	saved := map[string]float64{}
	for _, m := range s.saved {
		saved[m.currency] += m.amount
	}
	s.mu.Unlock()
	cs.Saved = moneyStats(saved)
	return cs
}

// liveCacheStores is a snapshot of the stores of loaded configs.
func liveCacheStores() []*cacheStore {
	var out []*cacheStore
	cacheStores.Range(func(_, v any) bool {
		out = append(out, v.(*cacheStore))
		return true
	})
	return out
}

// Interface guards
var (
	_ caddy.Destructor = (*cacheStore)(nil)
)
