package vecindex

import (
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
)

// Errors returned by Add; the index is left unchanged when Add fails.
var (
	// ErrDims means the vector's length differs from the index's dimensions
	// (fixed by New, or by the first successful Add when New got 0), or is 0.
	ErrDims = errors.New("vecindex: wrong number of dimensions")
	// ErrZeroVector means the vector has no direction to compare by cosine.
	ErrZeroVector = errors.New("vecindex: zero vector")
	// ErrNotFinite means a component is NaN or infinite.
	ErrNotFinite = errors.New("vecindex: vector has a NaN or infinite component")
)

// Search pipeline sizes; see doc.go for the measurements behind them.
const (
	// defaultRerank is how many candidates get an exact float32 dot product;
	// a namespace this small is scanned exactly. At 100k x 1024, clustered
	// queries find their true best with recall@1 0.92 at 128, 0.995 at 256
	// and 1.0 at 384; 256 costs about 0.1 ms.
	defaultRerank = 256
	// defaultShortlist is how many candidates the 256-bit coarse scan keeps
	// for ranking by the full sign code (about 60 µs for 1024: random
	// reads). From 512 to 4096 it did not change clustered recall.
	defaultShortlist = 1024
)

// Index holds vectors in namespaces: a search only sees its namespace's vectors.
//
// It is bounded by maxEntries across all namespaces. When an Add would
// exceed it, the least recently used entry is evicted, approximately: the
// index runs the CLOCK (second-chance) algorithm, where Add and Touch set an
// entry's reference bit and the eviction hand clears set bits as it passes,
// evicting the first entry whose bit is already clear. An entry added or
// touched since the hand last passed it therefore outlives every entry that
// was not. CLOCK is amortised O(1) and lets Touch run under the read lock
// (an atomic store), where exact LRU would need a write lock per hit.
//
// Search does not touch the entry it returns: only the caller knows whether
// the similarity passed its threshold, and touching every nearest neighbour
// of every miss would keep arbitrary entries alive. Call Touch on a hit.
//
// An Index is safe for concurrent use. Search, Touch and Len take a shared
// lock. Add and Remove are serialised among themselves by a second mutex
// and hold the exclusive lock only for O(1) pointer work: the vector is
// normalised and encoded before, and a namespace's arrays are grown or
// shrunk by copying them before (readers never write, so the writer may
// read them without the exclusive lock), so a Search never waits behind
// an O(n) copy.
type Index struct {
	// wmu serialises writers. Fields marked "wmu" are only used by
	// writers; the others are written with wmu and mu held and read by
	// readers with mu held shared (or by writers with wmu alone).
	wmu sync.Mutex
	mu  sync.RWMutex

	dims        int
	fullWords   int
	coarseWords int
	maxEntries  int
	rerank      int // see defaultRerank; a field so tests can force the approximate path
	shortlist   int // see defaultShortlist

	byID   map[uint64]*entry
	spaces map[uint64]*space

	// ring (wmu) holds every entry at its clock slot; free (wmu) lists
	// empty slots (left by Remove) so that the ring never outgrows
	// maxEntries; hand (wmu) is the clock hand.
	ring []*entry
	free []int32
	hand int

	scratch sync.Pool // *scratch, so that Search does not allocate
}

// entry is one stored vector.
type entry struct {
	id   uint64
	sp   *space
	pos  int32 // index in sp.entries and, times the code width, in sp's codes
	slot int32 // index in Index.ring
	ref  atomic.Uint32
	vec  []float32 // unit length
}

// space is a namespace. Its codes are packed contiguously, in the order of
// entries, so that scanning a large namespace is a sequential read.
type space struct {
	ns      uint64
	entries []*entry
	vecs    [][]float32 // entries[i].vec, so that reranking chases one pointer less
	full    []uint64    // fullWords per entry
	coarse  []uint64    // coarseWords per entry
}

// scratch is per-Search working memory.
type scratch struct {
	q     []float32
	qcode []uint64
	dist  []uint16
	hist  []int32
	cand  []int32
	sel   []int32
	dist2 []uint16
	hist2 []int32
	sims  []float32
}

// New returns an empty index of vectors with dims dimensions, holding at most
// maxEntries vectors. With dims 0 the dimensions are taken from the first
// successful Add. It panics if dims < 0 or maxEntries < 1, which are
// programming errors.
func New(dims, maxEntries int) *Index {
	if dims < 0 || maxEntries < 1 {
		panic(fmt.Sprintf("vecindex: New(%d, %d): need dims >= 0 and maxEntries >= 1", dims, maxEntries))
	}
	x := &Index{
		maxEntries: maxEntries,
		rerank:     defaultRerank,
		shortlist:  defaultShortlist,
		byID:       make(map[uint64]*entry),
		spaces:     make(map[uint64]*space),
	}
	x.setDims(dims)
	return x
}

func (x *Index) setDims(dims int) {
	x.dims = dims
	x.fullWords, x.coarseWords = codeWords(dims)
}

// Add stores a normalised copy of vec as id in namespace ns, replacing any
// vector already stored as id (in any namespace). If the index is full it
// first evicts an entry (see Index). The new entry counts as just used.
func (x *Index) Add(ns uint64, id uint64, vec []float32) error {
	if len(vec) == 0 {
		return ErrDims
	}
	// Normalise and encode before locking: it is the only O(dims) work.
	v := make([]float32, len(vec))
	switch ss := normalize(v, vec); {
	case math.IsNaN(ss) || math.IsInf(ss, 0):
		return ErrNotFinite
	case ss == 0:
		return ErrZeroVector
	}
	fw, cw := codeWords(len(vec))
	code := make([]uint64, fw+cw)
	encode(code[:fw], code[fw:], v)

	x.wmu.Lock()
	defer x.wmu.Unlock()
	if x.dims != 0 && len(vec) != x.dims {
		return ErrDims
	}
	// Everything but the pointer updates is prepared before the exclusive
	// section, which is then one short section per Add: the entry that
	// makes room (the old version of id, or the eviction victim), the
	// namespace's arrays if they must grow, and the clock slot.
	victim := x.byID[id]
	if victim == nil && len(x.byID) >= x.maxEntries {
		victim = x.clockVictim()
	}
	sp := x.spaces[ns]
	var grown *space
	if sp != nil {
		n := len(sp.entries)
		if victim != nil && victim.sp == sp {
			n--
		}
		if n == cap(sp.entries) {
			grown = x.resized(sp, n+n/2+16)
		}
	}
	var slot int32
	switch n := len(x.free); {
	case victim != nil:
		slot = victim.slot
	case n > 0:
		slot = x.free[n-1]
		x.free = x.free[:n-1]
	default:
		slot = int32(len(x.ring))
		if len(x.ring) == cap(x.ring) {
			// Grown by hand (ring is writer-only) so that the append
			// in the exclusive section never copies.
			x.ring = append(make([]*entry, 0, min(x.maxEntries, 2*len(x.ring)+16)), x.ring...)
		}
	}

	x.mu.Lock()
	if x.dims == 0 {
		x.setDims(len(vec))
	}
	if grown != nil {
		sp.take(grown)
	}
	if victim != nil {
		x.unlinkLocked(victim)
	}
	if sp = x.spaces[ns]; sp == nil { // new, or emptied by the victim's removal
		sp = &space{ns: ns}
		x.spaces[ns] = sp
	}
	e := &entry{id: id, sp: sp, pos: int32(len(sp.entries)), slot: slot, vec: v}
	e.ref.Store(1)
	sp.entries = append(sp.entries, e)
	sp.vecs = append(sp.vecs, v)
	sp.full = append(sp.full, code[:fw]...)
	sp.coarse = append(sp.coarse, code[fw:]...)
	x.byID[id] = e
	if int(slot) == len(x.ring) {
		x.ring = append(x.ring, e)
	} else {
		x.ring[slot] = e
	}
	x.mu.Unlock()

	if victim != nil && victim.sp != sp {
		x.maybeShrink(victim.sp)
	}
	return nil
}

// Remove deletes id if present. The cache calls it for entries it dropped.
func (x *Index) Remove(id uint64) {
	x.wmu.Lock()
	defer x.wmu.Unlock()
	e := x.byID[id]
	if e == nil {
		return
	}
	x.mu.Lock()
	x.unlinkLocked(e)
	x.mu.Unlock()
	x.ring[e.slot] = nil
	x.free = append(x.free, e.slot)
	x.maybeShrink(e.sp)
}

// Touch marks id as just used, so that eviction passes it over once more.
// It is cheap (shared lock and an atomic store) and a no-op for unknown ids.
func (x *Index) Touch(id uint64) {
	x.mu.RLock()
	if e := x.byID[id]; e != nil && e.ref.Load() == 0 {
		e.ref.Store(1) // load first: a store to an already set bit would bounce the cache line between cores for nothing
	}
	x.mu.RUnlock()
}

// Dims returns the dimensions of the stored vectors, 0 before the first
// Add of an index made with dims 0.
func (x *Index) Dims() int {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return x.dims
}

// Len returns the number of stored vectors.
func (x *Index) Len() int {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return len(x.byID)
}

// Search returns the stored vector in ns most similar to vec by cosine
// similarity, and that similarity. ok is false when ns holds nothing or vec
// cannot be compared (wrong dimensions, zero, NaN or infinite components).
//
// Namespaces of up to 256 entries are scanned exactly. Larger ones are
// shortlisted by sign-bit codes (Hamming distance estimates the angle) and
// the best 256 candidates are compared exactly, so the result can miss the
// true best when many vectors are about equally similar; doc.go gives the
// measured recall. The returned similarity is always the exact one.
func (x *Index) Search(ns uint64, vec []float32) (id uint64, similarity float32, ok bool) {
	s := x.getScratch()
	defer x.scratch.Put(s)

	x.mu.RLock()
	defer x.mu.RUnlock()
	sp := x.query(ns, vec, s)
	if sp == nil {
		return 0, 0, false
	}
	cand := x.candidates(sp, s)
	bi, sim := best(s.q, sp.vecs, cand)
	return sp.entries[cand[bi]].id, min(sim, 1), true
}

// Match is a stored vector SearchTop found, and its cosine similarity to
// the query.
type Match struct {
	ID         uint64
	Similarity float32
}

// SearchTop is Search for the k stored vectors in ns most similar to vec,
// most similar first, appended to dst: a caller that refuses the best one
// (a cache's guard) may take the next. The candidates are chosen as
// Search chooses them; the similarities are exact.
func (x *Index) SearchTop(ns uint64, vec []float32, k int, dst []Match) []Match {
	if k < 1 {
		return dst
	}
	s := x.getScratch()
	defer x.scratch.Put(s)

	x.mu.RLock()
	defer x.mu.RUnlock()
	sp := x.query(ns, vec, s)
	if sp == nil {
		return dst
	}
	cand := x.candidates(sp, s)
	sims := grow(s.sims, len(cand))
	s.sims = sims
	q, vecs := s.q, sp.vecs
	j := 0
	for ; j+4 <= len(cand); j += 4 { // as best computes them
		c := cand[j : j+4 : j+4]
		sims[j], sims[j+1], sims[j+2], sims[j+3] = dot4(q, vecs[c[0]], vecs[c[1]], vecs[c[2]], vecs[c[3]])
	}
	for ; j < len(cand); j++ {
		sims[j] = dot(q, vecs[cand[j]])
	}
	start := len(dst)
	for ci, i := range cand {
		sim := min(sims[ci], 1)
		n := len(dst) - start
		if n == k && sim <= dst[len(dst)-1].Similarity {
			continue
		}
		if n < k {
			dst = append(dst, Match{})
		}
		// insert in order among the kept ones (k is small)
		j := len(dst) - 1
		for ; j > start && dst[j-1].Similarity < sim; j-- {
			dst[j] = dst[j-1]
		}
		dst[j] = Match{ID: sp.entries[i].id, Similarity: sim}
	}
	return dst
}

// query is the namespace a search of vec in ns looks at, with the unit
// query in s.q; nil when there is nothing to search (no such namespace,
// or a vector of the wrong dimensions, zero or not finite). x.mu must be
// held shared.
func (x *Index) query(ns uint64, vec []float32, s *scratch) *space {
	sp := x.spaces[ns]
	if sp == nil || len(vec) != x.dims {
		return nil
	}
	s.q = grow(s.q, x.dims)
	if ss := normalize(s.q, vec); ss == 0 || math.IsNaN(ss) || math.IsInf(ss, 0) {
		return nil
	}
	return sp
}

// candidates returns the positions in the non-empty sp of the entries
// whose exact similarity to the unit query s.q is computed: all of them in
// a small namespace, the sign codes' shortlist in a large one.
//
// It runs on the caller's goroutine. Splitting a large namespace across
// cores was measured and rejected: no faster on an idle 2-core machine
// (waking a second thread costs what the halved scan saves) and p99 6.5 ms
// instead of 0.5 ms when both cores are busy searching, as the helper
// goroutines wait for a free P.
func (x *Index) candidates(sp *space, s *scratch) []int32 {
	n := len(sp.entries)
	q := s.q
	cand := s.cand[:0]
	if n <= x.rerank {
		for i := range n {
			cand = append(cand, int32(i))
		}
		s.cand = cand
		return cand
	}

	fw, cw := x.fullWords, x.coarseWords
	s.qcode = grow(s.qcode, fw+cw)
	qfull, qcoarse := s.qcode[:fw], s.qcode[fw:]
	encode(qfull, qcoarse, q)

	// Stage 1: the coarse code of every entry; keep the shortlist closest.
	if n > x.shortlist {
		s.dist = grow(s.dist, n)
		s.hist = grow(s.hist, cw*64+1)
		coarseScan(s.dist, s.hist, qcoarse, sp.coarse)
		cand = appendNearest(cand, s.dist, s.hist, x.shortlist, nil)
	} else {
		for i := range n {
			cand = append(cand, int32(i))
		}
	}

	// Stage 2: the full code of the shortlist; keep the rerank closest.
	s.dist2 = grow(s.dist2, len(cand))
	s.hist2 = grow(s.hist2, fw*64+1)
	clear(s.hist2)
	for j, i := range cand {
		d := hamming(qfull, sp.full[fw*int(i):fw*int(i)+fw])
		s.dist2[j] = uint16(d)
		s.hist2[d]++
	}
	sel := appendNearest(s.sel[:0], s.dist2, s.hist2, x.rerank, cand)
	s.cand, s.sel = cand, sel

	// Stage 3 (the caller's): exact cosine.
	return sel
}

// appendNearest appends to dst the k indexes with the smallest dist (as
// counted in hist), in index order, mapped through idx when idx is not nil.
func appendNearest(dst []int32, dist []uint16, hist []int32, k int, idx []int32) []int32 {
	t, atT := cutoff(hist, k)
	tt := uint16(t)
	for i, d := range dist {
		if d > tt || (d == tt && atT == 0) {
			continue
		}
		if d == tt {
			atT--
		}
		if idx != nil {
			dst = append(dst, idx[i])
		} else {
			dst = append(dst, int32(i))
		}
	}
	return dst
}

func (x *Index) getScratch() *scratch {
	if s, ok := x.scratch.Get().(*scratch); ok {
		return s
	}
	return new(scratch)
}

// unlinkLocked removes e from its namespace and from byID, not from the
// ring (the caller reuses or frees e.slot); x.wmu and x.mu must be held.
func (x *Index) unlinkLocked(e *entry) {
	sp := e.sp
	fw, cw := x.fullWords, x.coarseWords
	last := int32(len(sp.entries) - 1)
	if p := e.pos; p != last {
		// Swap-remove keeps the codes packed for the sequential scan.
		m := sp.entries[last]
		sp.entries[p] = m
		sp.vecs[p] = m.vec
		m.pos = p
		copy(sp.full[fw*int(p):fw*int(p)+fw], sp.full[fw*int(last):])
		copy(sp.coarse[cw*int(p):cw*int(p)+cw], sp.coarse[cw*int(last):])
	}
	sp.entries[last] = nil
	sp.vecs[last] = nil
	sp.entries = sp.entries[:last]
	sp.vecs = sp.vecs[:last]
	sp.full = sp.full[:fw*int(last)]
	sp.coarse = sp.coarse[:cw*int(last)]
	if last == 0 {
		// Thousands of per-client namespaces come and go: drop empty ones.
		delete(x.spaces, sp.ns)
	}
	delete(x.byID, e.id)
}

// maybeShrink gives back the arrays of a namespace that shrank a lot;
// x.wmu must be held, not x.mu.
func (x *Index) maybeShrink(sp *space) {
	n, c := len(sp.entries), cap(sp.entries)
	if n == 0 || c <= keptCapacity || n >= c/4 {
		return
	}
	smaller := x.resized(sp, 2*n)
	x.mu.Lock()
	sp.take(smaller)
	x.mu.Unlock()
}

// keptCapacity is the most slots a namespace keeps whatever it holds: a
// larger one shrinks once it holds under a quarter of its slots. The
// index holds arrays in proportion to its entries, not to the peaks of
// namespaces that emptied (a semantic cache has one per client and
// conversation, max_entries of them at most: at ~1,000 slots kept each,
// about 200 bytes a slot at 1024 dimensions, gigabytes).
const keptCapacity = 32

// clockVictim returns the entry CLOCK evicts next; x.wmu must be held and
// the index must be non-empty. Each pass over a set reference bit clears
// it, so the sweep is amortised O(1) per Add and Touch.
func (x *Index) clockVictim() *entry {
	for {
		if x.hand >= len(x.ring) {
			x.hand = 0
		}
		e := x.ring[x.hand]
		x.hand++
		if e == nil {
			continue
		}
		if e.ref.Load() != 0 {
			e.ref.Store(0)
			continue
		}
		return e
	}
}

// resized returns a copy of sp's arrays with room for capacity entries.
// x.wmu must be held; x.mu need not be, as readers never write.
func (x *Index) resized(sp *space, capacity int) *space {
	n := len(sp.entries)
	return &space{
		entries: append(make([]*entry, 0, capacity), sp.entries...),
		vecs:    append(make([][]float32, 0, capacity), sp.vecs...),
		full:    append(make([]uint64, 0, capacity*x.fullWords), sp.full[:n*x.fullWords]...),
		coarse:  append(make([]uint64, 0, capacity*x.coarseWords), sp.coarse[:n*x.coarseWords]...),
	}
}

// take replaces sp's arrays with those of r (from resized); x.mu must be
// held exclusively.
func (sp *space) take(r *space) {
	sp.entries, sp.vecs, sp.full, sp.coarse = r.entries, r.vecs, r.full, r.coarse
}

// grow returns s resliced to n elements, reallocated if too small.
func grow[T any](s []T, n int) []T {
	if cap(s) < n {
		return make([]T, n)
	}
	return s[:n]
}
