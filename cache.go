package llmrouter

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/llmrouter/caddy-llm-router/internal/chunkstore"
	"github.com/llmrouter/caddy-llm-router/internal/openai"
)

// Cache answers repeated questions from memory: an exact-match response
// cache of chat and embeddings answers, with stale-if-error.
type Cache struct {
	// TTL is how long an answer is fresh: served without asking a model.
	// Default: 10m.
	TTL caddy.Duration `json:"ttl,omitempty"`

	// MaxSize bounds the memory of stored answers, in bytes; beyond it
	// the oldest that were not asked for again are evicted. An answer
	// larger than a sixteenth of it is not stored. Default: 128MB
	// (128,000,000 bytes).
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

	// Scope are placeholders whose values, each with its placeholder, are
	// part of every key, so that no answer is served across them (only
	// their hash is kept, as the key is one); a request for which one is
	// empty is not cached.
	// Default: the client's credential, the values of its Authorization,
	// X-Api-Key and Api-Key headers: no two clients share an answer.
	Scope []string `json:"scope,omitempty"`

	// SharedScope shares answers across every client (Caddyfile: `scope
	// shared`): a client then learns from a hit, and its Age, that
	// someone asked the same question, and when. Default: false.
	SharedScope bool `json:"shared_scope,omitempty"`

	// Store names the store of answers: handlers that declare the same
	// name share one (the first to load sets its size). Default: the
	// handler's own store, kept across reloads, which no other handler
	// sees.
	Store string `json:"store,omitempty"`

	// NoStreams keeps streamed answers out of the cache (Caddyfile:
	// `streams off`); streamed requests are still served from JSON
	// answers. Default: false (streams are cached and replayed).
	NoStreams bool `json:"no_streams,omitempty"`

	// Semantic, when set, answers paraphrases of questions already
	// answered: a second lookup after an exact miss, by the meaning of
	// the last user message (cache_semantic.go). Default: off.
	Semantic *SemanticCache `json:"semantic,omitempty"`
}

// SemanticCache configures the semantic lookup: the last user message of
// a chat request is embedded and compared with the questions whose
// answers are stored, among requests identical in everything else.
type SemanticCache struct {
	// Model is the embedding model that embeds questions: one of this
	// handler's models of kind embedding, called through the router (its
	// deployments, failover, metrics and cost). Required.
	Model string `json:"model"`

	// Threshold is the cosine similarity, from 0 to 1, from which a
	// stored question counts as the same question. Default: 0.95.
	Threshold float64 `json:"threshold,omitempty"`

	// MaxEntries bounds the questions kept, per handler (or per named
	// store); the least recently used go first. Default: 10000.
	MaxEntries int `json:"max_entries,omitempty"`

	// LookupTimeout bounds the embedding of a question: past it the
	// request is a miss, answered by a model as usual. Default: 300ms.
	LookupTimeout caddy.Duration `json:"lookup_timeout,omitempty"`
}

const (
	defaultCacheTTL   = 10 * time.Minute
	defaultCacheSize  = 128_000_000
	defaultStaleError = 24 * time.Hour
	// an answer larger than this share of max_size is not stored, so that
	// one answer cannot flush the cache
	maxEntryShare = 16
)

// cache results, the `result` label of caddy_llm_router_cache_requests_total
const (
	cacheHit    = "hit"
	cacheMiss   = "miss"
	cacheStale  = "stale"
	cacheBypass = "bypass"
)

// ownStores tells apart the own stores (no store name) of one server of a
// config load. A handler's own store is found again at a reload by its
// server and a hash of its whole config (ownStoreKey): never by its place
// among the server's handlers, which a reload may give another handler
// (a route added before it, two routes swapped) that is told apart from
// it only by a matcher the handler never sees (a header, a remote IP).
// Two handlers of one server with the same config cannot be told apart
// that way either: once a second one is provisioned, each of them gets a
// store of its own that no later load finds (claimOwnStore). Caddy
// provisions each server's routes under a context of its own
// (caddyhttp.ServerCtxKey), one server after another.
var ownStores struct {
	sync.Mutex
	load  context.Context           // the config load (and server) being provisioned
	byKey map[string]*responseCache // the handler of each key; nil once a second one has it
	fresh int64                     // numbers the stores of handlers with a repeated config
}

// ownStoreKey is the pool key of the own store of the handler ctx
// provisions, whose config (as loaded, before defaults) is cfg: its
// server's listen addresses (no two servers share one) and a hash of cfg,
// which holds the store's size.
func ownStoreKey(ctx caddy.Context, cfg []byte) string {
	sum := sha256.Sum256(cfg)
	key := "cache/own " + hex.EncodeToString(sum[:])
	if srv, ok := ctx.Value(caddyhttp.ServerCtxKey).(*caddyhttp.Server); ok && srv != nil {
		key = "cache/own server " + strconv.Quote(strings.Join(srv.Listen, " ")) + "/" + hex.EncodeToString(sum[:])
	}
	return key
}

// claimOwnStore records rc's own store among its server's in this load.
// A second handler with the same key (the same config on the same server)
// makes the key ambiguous: both, and any further one, then leave the
// store found under it for one of their own, found by no later load, so
// that neither serves what the other, or the handler of the last load
// that had that config, stored.
func claimOwnStore(ctx caddy.Context, rc *responseCache) error {
	ownStores.Lock()
	defer ownStores.Unlock()
	if ownStores.load != ctx.Context {
		ownStores.load, ownStores.byKey = ctx.Context, map[string]*responseCache{}
	}
	first, seen := ownStores.byKey[rc.poolKey]
	if !seen {
		ownStores.byKey[rc.poolKey] = rc
		return nil
	}
	ownStores.byKey[rc.poolKey] = nil
	for _, h := range []*responseCache{first, rc} {
		if h == nil {
			continue // already moved
		}
		ownStores.fresh++
		if err := h.rebind(h.poolKey + " load-only " + strconv.FormatInt(ownStores.fresh, 10)); err != nil {
			return err
		}
	}
	return nil
}

// forgetOwnStore drops rc from ownStores, which would otherwise hold the
// last load's stores until the next load.
func forgetOwnStore(rc *responseCache) {
	ownStores.Lock()
	defer ownStores.Unlock()
	for k, h := range ownStores.byKey {
		if h == rc {
			delete(ownStores.byKey, k)
		}
	}
}

// credentialHeaders are the headers an OpenAI-compatible client sends its
// credential in (the OpenAI SDKs' Authorization, Azure's api-key,
// Anthropic's x-api-key): by default every one of them is part of the key,
// so that no two clients share an answer whichever they use. Read
// straight from the header map, not through the replacer.
var credentialHeaders = [...]string{"Authorization", "X-Api-Key", "Api-Key"}

// responseCache is a config's cache settings over a shared store.
type responseCache struct {
	ttl, stale time.Duration
	match      map[string]bool
	keyHeaders []string
	scope      []string // placeholders; nil for a shared cache or the default
	byClient   bool     // the default scope: the client's credentialHeaders
	own        bool     // the handler's own store (no store name): keys hold the request's base (requestBase)
	streams    bool
	store      *cacheStore
	poolKey    string
	cfg        *Cache // what the stores are made of (acquire)
	size       int64
	semantic   *semanticCache // nil without a semantic block
	// emptyScopeWarned: a request whose scope placeholder was empty has
	// been logged (once a handler: a misconfiguration repeats on every
	// request)
	emptyScopeWarned atomic.Bool
}

// warnEmptyScope logs, once, that a request bypassed the cache because
// its scope placeholder p was empty.
func (rc *responseCache) warnEmptyScope(logger *zap.Logger, p string) {
	if !rc.emptyScopeWarned.Load() && rc.emptyScopeWarned.CompareAndSwap(false, true) {
		logger.Warn("cache: a request's scope placeholder is empty, so it is not cached (logged once)",
			zap.String("placeholder", p))
	}
}

// newResponseCache builds the cache c configures; forwarded are the client
// headers the router's forward_header opened.
// ownKey is the pool key of the handler's own store (ownStoreKey), used
// when c names no store.
func newResponseCache(c *Cache, forwarded []string, ownKey string) (*responseCache, error) {
	rc := &responseCache{ttl: time.Duration(c.TTL), stale: time.Duration(c.StaleIfError), keyHeaders: keyHeaders(c.KeyHeaders, forwarded), streams: !c.NoStreams}
	switch {
	case c.SharedScope:
	case len(c.Scope) > 0:
		rc.scope = c.Scope
	default:
		rc.byClient = true
	}
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
	// a handler's own store, by its server and config (ownStoreKey), or
	// a store several handlers name
	rc.own = c.Store == ""
	key := ownKey
	if !rc.own {
		key = "cache/store " + c.Store
	}
	rc.cfg, rc.size = c, size
	if err := rc.acquire(key); err != nil {
		return nil, err
	}
	return rc, nil
}

// acquire takes the store (and semantic store) under key from the pools.
func (rc *responseCache) acquire(key string) error {
	rc.poolKey = key
	v, _, err := cacheStores.LoadOrNew(key, func() (caddy.Destructor, error) {
		st := newCacheStore(rc.size)
		st.name = rc.cfg.Store
		return st, nil
	})
	if err != nil {
		return err
	}
	rc.store = v.(*cacheStore)
	if sc := rc.cfg.Semantic; sc != nil {
		var logger *zap.Logger
		if rc.semantic != nil {
			logger = rc.semantic.logger
		}
		if rc.semantic, err = newSemanticCache(sc, key); err != nil {
			rc.semantic = nil
			_, _ = cacheStores.Delete(key)
			return err
		}
		rc.semantic.logger = logger
	}
	return nil
}

// rebind gives rc, at provisioning, the store under key instead of its
// own (claimOwnStore).
func (rc *responseCache) rebind(key string) error {
	rc.release()
	return rc.acquire(key)
}

// keyHeaders are the request headers whose values a key holds: the
// cache's key_header fields, then the forwarded ones they do not name
// already. A forwarded header may change the answer, which must then not
// be served to a request that sent another value. The headers forwarded
// by default are not keyed: they change no answer, and they differ on
// every request. Key headers keep their order and spelling, so that a
// config without forward_header keeps its keys.
func keyHeaders(keyed, forwarded []string) []string {
	out := keyed
	for _, f := range forwarded {
		f = http.CanonicalHeaderKey(f)
		if slices.Contains(defaultForwardedHeaders, f) || slices.ContainsFunc(out, func(k string) bool { return http.CanonicalHeaderKey(k) == f }) {
			continue
		}
		out = append(out[:len(out):len(out)], f) // a copy: never into the config's array
	}
	return out
}

// release undoes newResponseCache.
func (rc *responseCache) release() {
	_, _ = cacheStores.Delete(rc.poolKey)
	if rc.semantic != nil {
		rc.semantic.release()
	}
}

// cacheStores holds the stored answers, so that they survive reloads: one
// store per handler (by its server and config, ownStoreKey), or per store
// name (responseCache.poolKey).
var cacheStores = caddy.NewUsagePool()

// cacheStore is a bounded set of answers, and the requests in flight to
// fill it (cache_flight.go).
type cacheStore struct {
	name string // as handlers name it (store); "" for a handler's own

	// the answers, serialized (encodeEntry) in a store that the garbage
	// collector never scans: a full default store is ~200,000 answers,
	// which as Go objects it would mark at every cycle
	entries *chunkstore.Store
	maxSize int64

	mu      sync.Mutex
	flights map[answerKey]*cacheFlight // requests on their way to a model, which others follow
	saved   []money

	sizeMu   sync.Mutex
	inFlight int64 // bytes of streams in flight, counted against maxSize (cache_flight.go)

	results  [6]atomic.Int64 // hit, miss, stale, bypass, semantic_hit, semantic_blocked
	embedded []money         // what embedding questions for the semantic lookup cost
}

func newCacheStore(size int64) *cacheStore {
	return &cacheStore{entries: chunkstore.New(size), maxSize: size, flights: map[answerKey]*cacheFlight{}}
}

// Destruct implements caddy.Destructor: the last config using the store
// let go of it.
func (s *cacheStore) Destruct() error {
	s.entries.Clear()
	return nil
}

// cacheEntry is one stored answer: as JSON, also when it was streamed (a
// stream is kept assembled, and replayed as a stream from that). One read
// from the store shares its bytes (body and names) with the store's
// chunk, which is never written again: it is read-only.
type cacheEntry struct {
	stored   time.Time // freshness is the looking config's (lookup)
	body     []byte    // the provider's JSON answer, or the one its stream assembles to
	model    string    // the deployment that answered
	provider string
	cost     float64 // what the answer cost, in currency
	currency string
}

// entryHead is an encoded entry's fixed part: the time it was stored
// (Unix nanoseconds) and its cost (float64 bits).
const entryHead = 16

// encodeEntry appends e but its body (which follows it in the record).
func encodeEntry(b []byte, e *cacheEntry) []byte {
	b = binary.LittleEndian.AppendUint64(b, uint64(e.stored.UnixNano()))
	b = binary.LittleEndian.AppendUint64(b, math.Float64bits(e.cost))
	for _, s := range [...]string{e.model, e.provider, e.currency} {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	return b
}

// decodeEntry reads a record of encodeEntry and its body; the entry's
// strings and body are the record's bytes (read-only, never written
// again: chunkstore).
func decodeEntry(rec []byte) *cacheEntry {
	e := &cacheEntry{stored: storedAt(rec), cost: math.Float64frombits(binary.LittleEndian.Uint64(rec[8:]))}
	rec = rec[entryHead:]
	for _, s := range [...]*string{&e.model, &e.provider, &e.currency} {
		n, k := binary.Uvarint(rec)
		rec = rec[k:]
		if n > 0 {
			*s = unsafe.String(&rec[0], int(n))
		}
		rec = rec[n:]
	}
	e.body = rec
	return e
}

// storedAt is when the entry encoded in rec was stored.
func storedAt(rec []byte) time.Time { return time.Unix(0, int64(binary.LittleEndian.Uint64(rec))) }

// lookup finds key's entry; fresh reports whether it is within ttl at t.
// ttl and stale are the looking config's, not those of the config that
// stored the entry: a reload that shortens them applies to every entry.
func (s *cacheStore) lookup(key answerKey, t time.Time, ttl, stale time.Duration) (e *cacheEntry, fresh bool) {
	rec, ok := s.entries.Get(key)
	if !ok {
		return nil, false
	}
	age := t.Sub(storedAt(rec)) // before decoding: a dead entry costs nothing
	if age > ttl+stale {
		return nil, false
	}
	return decodeEntry(rec), age <= ttl
}

// put stores an answer, unless it is too large for the store.
func (s *cacheStore) put(key answerKey, e *cacheEntry) bool {
	if int64(len(e.body)) > s.maxSize/maxEntryShare {
		return false
	}
	var head [entryHead + 3*binary.MaxVarintLen64 + 256]byte
	s.entries.Put(key, encodeEntry(head[:0], e), e.body)
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
	case cacheSemanticHit:
		s.results[4].Add(1)
	case cacheSemanticBlocked:
		s.results[5].Add(1)
	}
	if saved > 0 {
		s.mu.Lock()
		s.saved = addMoney(s.saved, currency, saved)
		s.mu.Unlock()
	}
}

// countEmbedding adds what embedding a question cost, which the saved
// figure is reported net of.
func (s *cacheStore) countEmbedding(cost float64, currency string) {
	s.mu.Lock()
	s.embedded = addMoney(s.embedded, currency, cost)
	s.mu.Unlock()
}

// cacheKey is the key of a request: a hash of the endpoint, the upstreams
// its plan names (so that handlers and reloads that route it elsewhere do
// not share answers), the key headers and the body's canonical form
// (openai.Request.Key). No prompt text is kept.
func cacheKey(ep endpoint, ns string, body *openai.Request, header http.Header, keyHeaders []string, scope ...string) answerKey {
	return body.Key(func(out []byte) []byte {
		return appendKeyHead(out, ep, ns, header, keyHeaders, scope)
	})
}

// appendKeyHead appends what a key holds besides the body: the scope's
// values, the endpoint, the plan's namespace and the key headers.
func appendKeyHead(out []byte, ep endpoint, ns string, header http.Header, keyHeaders []string, scope []string) []byte {
	out = openai.AppendLen(out, 'c', len(scope))
	for _, v := range scope {
		out = openai.AppendString(out, 's', v)
	}
	out = binary.LittleEndian.AppendUint64(out, uint64(ep))
	out = openai.AppendString(out, 's', ns)
	var conn []string
	if len(keyHeaders) > 0 {
		conn = header["Connection"]
	}
	for _, name := range keyHeaders {
		tag := byte('k')
		if len(conn) > 0 && namedInConnection(conn, name) {
			// hop-by-hop for this request: a forwarded header so named is
			// not sent upstream (upstreamHeader), and the answer given
			// without it is not the answer to its value
			tag = 'h'
		}
		out = openai.AppendString(out, tag, name)
		values := header.Values(name)
		out = openai.AppendLen(out, 'a', len(values))
		for _, v := range values {
			out = openai.AppendString(out, 's', v)
		}
	}
	return out
}

// namedInConnection reports whether the values of a request's Connection
// header name field: hop-by-hop for that request, so upstreamHeader does
// not send it and appendKeyHead keys it apart.
func namedInConnection(conn []string, field string) bool {
	for _, v := range conn {
		for f := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(f), field) {
				return true
			}
		}
	}
	return false
}

// answerKey is a cache key: a SHA-256, kept as an array rather than a
// string, which would be one more allocation a request.
type answerKey [sha256.Size]byte

// cacheControl reads a request's Cache-Control: no-cache skips the lookup
// (the answer still refreshes the entry), no-store neither reads nor
// writes. Without Cache-Control, Pragma: no-cache is no-cache (RFC 9111,
// 5.4), as HTTP/1.0 clients and some proxies send it.
func cacheControl(h http.Header) (lookup, store bool) {
	lookup, store = true, true
	values := h.Values("Cache-Control")
	if len(values) == 0 {
		for _, v := range h.Values("Pragma") {
			for d := range strings.SplitSeq(v, ",") {
				if strings.EqualFold(strings.TrimSpace(d), "no-cache") {
					lookup = false
				}
			}
		}
	}
	for _, v := range values {
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

// cacheStats are a store's figures for the stats API.
func (s *cacheStore) report() CacheStats {
	cs := CacheStats{Store: s.name, MaxBytes: s.maxSize, Entries: int64(s.entries.Len()), Bytes: s.entries.Size(),
		Hits: s.results[0].Load(), Misses: s.results[1].Load(), Stale: s.results[2].Load(), Bypassed: s.results[3].Load(),
		SemanticHits: s.results[4].Load(), SemanticBlocked: s.results[5].Load()}
	if served := cs.Hits + cs.SemanticHits + cs.Stale + cs.Misses + cs.SemanticBlocked; served > 0 {
		cs.HitRatio = float64(cs.Hits+cs.SemanticHits+cs.Stale) / float64(served)
	}
	cs.HitRatioHuman = humanPercent(cs.HitRatio)
	cs.BytesHuman = fmt.Sprintf("%s of %s", humanBytes(cs.Bytes), humanBytes(cs.MaxBytes))
	s.mu.Lock()
	saved := map[string]float64{}
	for _, m := range s.saved {
		saved[m.currency] += m.amount
	}
	var embedded map[string]float64
	if len(s.embedded) > 0 {
		embedded = map[string]float64{}
		for _, m := range s.embedded {
			saved[m.currency] -= m.amount
			embedded[m.currency] += m.amount
		}
	}
	s.mu.Unlock()
	cs.Saved = moneyStats(saved)
	if embedded != nil {
		cs.EmbeddingCost = moneyStats(embedded)
	}
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
