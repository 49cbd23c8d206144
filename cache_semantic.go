package llmrouter

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/maphash"
	"net/http"
	"net/url"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/maypok86/otter/v2"
	"go.uber.org/zap"

	"github.com/llmrouter/caddy-llm-router/internal/openai"
	"github.com/llmrouter/caddy-llm-router/internal/semantic"
	"github.com/llmrouter/caddy-llm-router/internal/vecindex"
)

// This file is the semantic cache: a second lookup after an exact miss,
// by the meaning of the last user message. The question is embedded
// through the handler's own embedding deployments (a request of the
// router's own: failover, metrics, cost, budgets), searched among the
// questions stored in its namespace (everything else about the request
// identical: openai.Request.QuestionKey), and a close enough one is
// served only if the guards (internal/semantic) find the same numbers,
// codes, addresses and negation in both. A miss keeps its vector, stored
// with its answer when the answer is.

const (
	defaultSemanticThreshold = 0.95
	defaultSemanticEntries   = 10_000
	defaultSemanticTimeout   = 300 * time.Millisecond
	// semanticMaxChars is the longest last user message compared by
	// meaning: a paraphrase is a short question; a long text that embeds
	// close to another may still differ in a detail that changes the
	// answer, and embedding it costs more.
	semanticMaxChars = 1000
	// semanticMaxDims is the longest vector kept: twice the longest of
	// today's embedding models (4096). The index is bounded by max_entries
	// vectors, each as long as the model makes it: a broken or
	// misconfigured upstream's vector of a million dimensions (4 MiB)
	// would make max_entries of them gigabytes.
	semanticMaxDims = 8192
)

// cache results of the semantic lookup (cache_requests_total's result)
const (
	cacheSemanticHit     = "semantic_hit"     // a paraphrase's stored answer was served
	cacheSemanticBlocked = "semantic_blocked" // a close question, refused by a guard: asked a model
)

// semanticCache is a config's semantic settings over a store that
// survives reloads.
type semanticCache struct {
	model     string
	threshold float32
	timeout   time.Duration
	store     *semanticStore
	poolKey   string
	logger    *zap.Logger
}

// semanticStores holds the questions of each handler (or named store),
// kept across reloads as the answers are.
var semanticStores = caddy.NewUsagePool()

func newSemanticCache(c *SemanticCache, answersKey string) (*semanticCache, error) {
	sc := &semanticCache{model: c.Model, threshold: float32(c.Threshold), timeout: time.Duration(c.LookupTimeout)}
	if sc.threshold <= 0 {
		sc.threshold = defaultSemanticThreshold
	}
	if sc.timeout <= 0 {
		sc.timeout = defaultSemanticTimeout
	}
	n := c.MaxEntries
	if n <= 0 {
		n = defaultSemanticEntries
	}
	// vectors of another embedding model are another space: a store per
	// model and bound
	sc.poolKey = answersKey + "/semantic " + c.Model + "/" + strconv.Itoa(n)
	v, _, err := semanticStores.LoadOrNew(sc.poolKey, func() (caddy.Destructor, error) { return newSemanticStore(n) })
	if err != nil {
		return nil, err
	}
	sc.store = v.(*semanticStore)
	return sc, nil
}

// release undoes newSemanticCache.
func (sc *semanticCache) release() { _, _ = semanticStores.Delete(sc.poolKey) }

// semanticStore is the questions whose answers are stored: their vectors
// in a bounded index, and beside it, under the same bound, what a hit
// needs besides. The two evict on their own (the index the least recently
// used vector, the metadata by otter's policy): a vector found without its
// metadata is dropped then.
type semanticStore struct {
	// index is replaced, empty, when the embedding model's vectors change
	// dimensions (remember): the old ones cannot be compared with the new
	index      atomic.Pointer[vecindex.Index]
	maxEntries int
	meta       *otter.Cache[uint64, semanticMeta] // by vector id

	// failedInARow counts embeddings that failed or were late since the
	// last that worked (not those a client's budget refused: that is no
	// failure of the model); from semanticFailuresToRest on, lookups rest
	// until restUntil (unix nanoseconds), twice as long at each of the
	// rests in a row. A slow embedding provider would otherwise add
	// lookup_timeout to every request, and bill each abandoned embedding.
	failedInARow, rests atomic.Int64
	restUntil           atomic.Int64
}

// semanticFailuresToRest, semanticFirstRest and semanticLongestRest shape
// the rest after failed embeddings: 1 s after the third in a row, doubling
// with each failed probe after it, at most a minute.
const (
	semanticFailuresToRest = 3
	semanticFirstRest      = time.Second
	semanticLongestRest    = time.Minute
)

// resting reports whether lookups should skip the embedding at t.
func (s *semanticStore) resting(t time.Time) bool {
	return t.UnixNano() < s.restUntil.Load()
}

// embeddingFailed counts a failed or late embedding; when it starts a
// rest it returns the rest's length (else 0). The failures of lookups
// already waiting when a rest began neither start nor lengthen one.
func (s *semanticStore) embeddingFailed(t time.Time) time.Duration {
	if s.failedInARow.Add(1) < semanticFailuresToRest || s.resting(t) {
		return 0
	}
	rest := semanticLongestRest
	if k := s.rests.Add(1) - 1; k < 6 {
		rest = min(semanticFirstRest<<k, semanticLongestRest)
	}
	s.restUntil.Store(t.Add(rest).UnixNano())
	return rest
}

// embeddingWorked ends a run of failures (loads first: the common case
// writes nothing shared).
func (s *semanticStore) embeddingWorked() {
	if s.failedInARow.Load() != 0 {
		s.failedInARow.Store(0)
	}
	if s.rests.Load() != 0 {
		s.rests.Store(0)
	}
}

// semanticMeta is what a stored question keeps beside its vector.
type semanticMeta struct {
	answer answerKey      // the exact key its answer is stored under
	facts  semantic.Facts // what the guards compare
}

func newSemanticStore(maxEntries int) (*semanticStore, error) {
	meta, err := otter.New(&otter.Options[uint64, semanticMeta]{
		MaximumSize: maxEntries,
		Executor:    func(fn func()) { fn() }, // maintenance on the caller: no goroutine to stop
	})
	if err != nil {
		return nil, err
	}
	s := &semanticStore{maxEntries: maxEntries, meta: meta}
	s.index.Store(vecindex.New(0, maxEntries))
	return s, nil
}

// Destruct implements caddy.Destructor: the last config using the store
// let go of it.
func (s *semanticStore) Destruct() error {
	s.meta.InvalidateAll()
	return nil
}

// remember stores a question's vector with its answer's key. A vector of
// other dimensions than those stored means the embedding model changed
// (another upstream model, or a dimensions setting): the stored vectors
// are dropped for an index of the new ones, and remember reports the old
// and new dimensions (else 0, 0) for the caller to log.
func (s *semanticStore) remember(q *semanticQuestion, answer answerKey) (oldDims, newDims int) {
	id := binary.LittleEndian.Uint64(answer[:8])
	// the metadata first: a lookup that finds the vector without it takes
	// it for evicted, and removes it
	s.meta.Set(id, semanticMeta{answer: answer, facts: q.facts})
	x := s.index.Load()
	err := x.Add(q.ns, id, q.vec)
	if errors.Is(err, vecindex.ErrDims) && len(q.vec) > 0 {
		fresh := vecindex.New(len(q.vec), s.maxEntries)
		if s.index.CompareAndSwap(x, fresh) {
			oldDims, newDims = x.Dims(), len(q.vec)
		}
		err = s.index.Load().Add(q.ns, id, q.vec)
	}
	if err != nil {
		s.meta.Invalidate(id) // a zero or non-finite vector
	}
	return oldDims, newDims
}

// semanticCandidates is how many of the closest stored questions a
// lookup considers: when a guard refuses the closest (another order
// number in the same words), a less close one may still be the same
// question.
const semanticCandidates = 4

// semanticMatch is a stored question found close to a request's.
type semanticMatch struct {
	id         uint64
	meta       semanticMeta
	similarity float32
}

// lookup finds the closest stored questions of q's namespace, closest
// first, appended to dst.
func (s *semanticStore) lookup(q *semanticQuestion, dst []semanticMatch) []semanticMatch {
	var found [semanticCandidates]vecindex.Match
	x := s.index.Load()
	for _, m := range x.SearchTop(q.ns, q.vec, semanticCandidates, found[:0]) {
		meta, ok := s.meta.GetIfPresent(m.ID)
		if !ok {
			x.Remove(m.ID) // its metadata was evicted
			continue
		}
		dst = append(dst, semanticMatch{id: m.ID, meta: meta, similarity: m.Similarity})
	}
	return dst
}

// semanticQuestion is a request's question as the semantic cache sees
// it: its namespace, its vector and its guard facts.
type semanticQuestion struct {
	ns    uint64
	vec   []float32
	facts semantic.Facts
}

// lookupSemantic is the semantic lookup after an exact miss: it serves a
// stored answer to a paraphrase (true), or keeps the question in the
// ticket so that its answer's vector is stored too. Anything that stops
// it (a request that does not qualify, an embedding that fails or is
// late) makes the request an ordinary miss.
func (ex *exchange) lookupSemantic(values []string) bool {
	rc := ex.router.cache
	sc := rc.semantic
	b := &ex.body
	if ex.ep != chatEndpoint || b.HasTools || b.N > 1 || b.LastUserChars == 0 || b.LastUserChars > semanticMaxChars {
		return false
	}
	nsKey, ok := b.QuestionKey(func(out []byte) []byte {
		out = append(out, 'S') // never an exact key
		return appendKeyHead(out, ex.ep, ex.ns, ex.req.Header, rc.keyHeaders, values)
	})
	if !ok {
		return false
	}
	if sc.store.resting(now()) {
		metrics.semanticSkipped.Inc()
		return false
	}
	text := b.LastUser()
	vec, space, err := ex.embedQuestion(sc, text)
	if err != nil {
		metrics.semanticFailures.Inc()
		ex.router.logger.Debug("semantic cache: the question was not embedded; a miss", zap.Error(err))
		if errors.Is(err, errEmbeddingRefused) || errors.Is(err, errLookupAbandoned) || errors.Is(err, errQuestionRefused) {
			// the client's budget, the client's leaving, or the client's
			// question, not the embedding model: the store's rest would
			// skip the lookups of every client
			return false
		}
		if rest := sc.store.embeddingFailed(now()); rest > 0 {
			ex.router.logger.Warn("semantic cache: embeddings failed or were late several times in a row; lookups pause",
				zap.String("model", sc.model), zap.Duration("pause", rest), zap.Error(err))
		}
		return false
	}
	sc.store.embeddingWorked()
	// vectors are compared only with those of the same upstream model: a
	// deployment of the semantic model that is another model underneath
	// (a fallback) has vectors of another space, even at equal dimensions
	q := &semanticQuestion{ns: binary.LittleEndian.Uint64(nsKey[:8]) ^ space, vec: vec, facts: semantic.Extract(text)}
	ex.cache.question = q
	var found [semanticCandidates]semanticMatch
	matches := sc.store.lookup(q, found[:0])
	if len(matches) == 0 {
		return false
	}
	if best := matches[0].similarity; best < sc.threshold {
		metrics.semanticSimilarity[semanticMissed].Observe(float64(best))
		return false
	}
	var blocked semantic.Guard // the guard that refused the closest
	for _, m := range matches {
		if m.similarity < sc.threshold {
			break
		}
		if g, ok := semantic.Check(q.facts, m.meta.facts); !ok {
			if blocked == "" {
				blocked = g
			}
			continue
		}
		at := now()
		e, fresh := rc.store.lookup(m.meta.answer, at, rc.ttl, rc.stale)
		if e == nil {
			sc.store.index.Load().Remove(m.id) // its answer is gone
			continue
		}
		if !fresh {
			if ex.cache.stale == nil {
				ex.cache.stale = e // stale-if-error holds for a paraphrase too
			}
			continue
		}
		sc.store.index.Load().Touch(m.id) // recently useful: evicted last
		metrics.semanticSimilarity[semanticServed].Observe(float64(m.similarity))
		ex.setHeader(hdrCacheSimilarity, strconv.FormatFloat(float64(m.similarity), 'f', 4, 32))
		if ex.serveCached(e, cacheSemanticHit, at) {
			return true
		}
		// not servable to this request (a stream it could not be replayed
		// as): a miss, which says no similarity
		ex.w.Header().Del(hdrCacheSimilarity)
		return false
	}
	if blocked != "" {
		metrics.semanticSimilarity[semanticBlocked].Observe(float64(matches[0].similarity))
		metrics.semanticGuards.WithLabelValues(string(blocked)).Inc()
		ex.setCacheResult(cacheSemanticBlocked)
	}
	return false
}

// embedQuestion embeds text with the semantic cache's model, as a request
// of the router's own to its embedding deployments: failover, metrics,
// cost and the client's budgets as for any embeddings request, within the
// lookup timeout. space names the upstream model that answered: vectors
// of different models are never compared.
func (ex *exchange) embedQuestion(sc *semanticCache, text string) (vec []float32, space uint64, err error) {
	r := ex.router
	res := r.routing.resolve("", sc.model, kindEmbedding)
	if res.plan == nil {
		return nil, 0, fmt.Errorf("no deployment of %s", sc.model)
	}
	// base64, as the official SDKs ask: a quarter of the bytes, and no
	// numbers to parse (openai.EmbeddingVector reads either form)
	body := []byte(`{"model":` + openai.Quote(sc.model) + `,"input":` + openai.Quote(text) + `,"encoding_format":"base64"}`)
	ctx, cancel := context.WithTimeout(ex.ctx, sc.timeout)
	defer cancel()
	w := &bufferedResponse{header: http.Header{}}
	sub := &exchange{
		start:  now(),
		router: r,
		w:      w,
		req: (&http.Request{Method: http.MethodPost, URL: &url.URL{Path: embeddingsEndpoint.path()}, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
			Header: http.Header{"Content-Type": {"application/json"}}}).WithContext(ex.req.Context()),
		ctx:      ctx,
		ep:       embeddingsEndpoint,
		repl:     ex.repl,
		span:     ex.span,
		client:   ex.client,
		route:    res.route,
		model:    res.model,
		ns:       res.ns,
		internal: true,
	}
	sub.ph.reason, sub.ph.routed = "semantic_cache", true
	defer sub.finish()
	if err := sub.body.Parse(body, openai.Embeddings); err != nil {
		return nil, 0, err
	}
	p := res.plan
	if len(r.budgets) > 0 {
		var ok bool
		if p, ok = sub.applyBudgets(p); !ok {
			return nil, 0, errEmbeddingRefused
		}
	}
	sub.run(p)
	// what every attempt cost, as cost_total counts it: those that failed
	// over or were given up at lookup_timeout are billed too, and the
	// cache's net saving must not leave them out
	sub.usageMu.Lock()
	spent := sub.spent
	sub.usageMu.Unlock()
	if spent > 0 {
		metrics.semanticCost.WithLabelValues(r.currency.Code).Add(spent)
		ex.cache.embedCost, ex.cache.embedIn = spent, r.currency.Code
	}
	if sub.status != http.StatusOK || sub.answered == nil {
		if ex.ctx.Err() != nil {
			return nil, 0, errLookupAbandoned
		}
		if ctx.Err() != nil {
			return nil, 0, fmt.Errorf("no embedding within lookup_timeout %s", sc.timeout)
		}
		if sub.answered != nil && sub.status >= 400 && sub.status < 500 {
			return nil, 0, fmt.Errorf("%w: %d", errQuestionRefused, sub.status)
		}
		return nil, 0, fmt.Errorf("the embedding request ended %d", sub.status)
	}
	if vec, err = openai.EmbeddingVector(w.body.Bytes()); err == nil && len(vec) > semanticMaxDims {
		return nil, 0, fmt.Errorf("the embedding has %d dimensions, more than the %d kept", len(vec), semanticMaxDims)
	}
	return vec, maphash.String(embeddingSpaces, sub.answered.upstream), err
}

// errEmbeddingRefused is a budget of the client's refusing the embedding
// of its question: that request's lookup is skipped, and no other's.
var errEmbeddingRefused = errors.New("a budget refused the embedding")

// errLookupAbandoned is a client that left (over HTTP/2 or 3, where that
// cancels its request) while its question was being embedded: no failure
// of the embedding model either, or any client could make the lookups of
// every other rest by leaving three times.
var errLookupAbandoned = errors.New("the client left during the embedding")

// errQuestionRefused is an embedding model answering the question with
// the client's error (a 4xx it relays: a question longer than the model
// takes): the router's request differs from the others only by the
// question, so it is no failure of the model, and a rest would let one
// client's questions pause the lookups of every other.
var errQuestionRefused = errors.New("the embedding model refused the question")

// embeddingSpaces seeds the hash of an upstream model's name into a
// namespace (the index lives in this process only).
var embeddingSpaces = maphash.MakeSeed()

// bufferedResponse is the response writer of a request the router makes
// of itself: it keeps the answer.
type bufferedResponse struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (b *bufferedResponse) Header() http.Header { return b.header }
func (b *bufferedResponse) WriteHeader(code int) {
	if b.status == 0 {
		b.status = code
	}
}
func (b *bufferedResponse) Write(p []byte) (int, error) {
	if b.status == 0 {
		b.status = http.StatusOK
	}
	return b.body.Write(p)
}

// Interface guards
var (
	_ caddy.Destructor    = (*semanticStore)(nil)
	_ http.ResponseWriter = (*bufferedResponse)(nil)
)
