package vecindex

import (
	"cmp"
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
)

// checkInvariants verifies the index's internal bookkeeping.
func checkInvariants(t *testing.T, x *Index) {
	t.Helper()
	x.wmu.Lock()
	defer x.wmu.Unlock()
	x.mu.RLock()
	defer x.mu.RUnlock()
	if len(x.byID) > x.maxEntries {
		t.Fatalf("%d entries over the bound %d", len(x.byID), x.maxEntries)
	}
	if len(x.ring) > x.maxEntries {
		t.Fatalf("ring of %d slots over the bound %d", len(x.ring), x.maxEntries)
	}
	total := 0
	fw, cw := x.fullWords, x.coarseWords
	full, coarse := make([]uint64, fw), make([]uint64, cw)
	for ns, sp := range x.spaces {
		n := len(sp.entries)
		if n == 0 || sp.ns != ns {
			t.Fatalf("space %d: %d entries, ns %d", ns, n, sp.ns)
		}
		if len(sp.vecs) != n || len(sp.full) != n*fw || len(sp.coarse) != n*cw {
			t.Fatalf("space %d: %d entries, %d vecs, %d full words, %d coarse words", ns, n, len(sp.vecs), len(sp.full), len(sp.coarse))
		}
		for i, e := range sp.entries {
			if int(e.pos) != i || e.sp != sp || x.byID[e.id] != e || x.ring[e.slot] != e || &sp.vecs[i][0] != &e.vec[0] {
				t.Fatalf("space %d: entry %d (id %d) is inconsistent", ns, i, e.id)
			}
			encode(full, coarse, e.vec)
			if !slices.Equal(full, sp.full[i*fw:(i+1)*fw]) || !slices.Equal(coarse, sp.coarse[i*cw:(i+1)*cw]) {
				t.Fatalf("space %d: codes of entry %d (id %d) are stale", ns, i, e.id)
			}
		}
		total += n
	}
	if total != len(x.byID) {
		t.Fatalf("spaces hold %d entries, byID %d", total, len(x.byID))
	}
	used := 0
	for _, e := range x.ring {
		if e != nil {
			used++
		}
	}
	if used != total || len(x.free) != len(x.ring)-used {
		t.Fatalf("ring: %d used of %d, %d free, %d entries", used, len(x.ring), len(x.free), total)
	}
	for _, f := range x.free {
		if x.ring[f] != nil {
			t.Fatalf("free slot %d is in use", f)
		}
	}
}

func has(x *Index, id uint64) bool {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return x.byID[id] != nil
}

// axis returns a unit vector along dimension i.
func axis(dims, i int) []float32 {
	v := make([]float32, dims)
	v[i] = 1
	return v
}

func mustAdd(t *testing.T, x *Index, ns, id uint64, v []float32) {
	t.Helper()
	if err := x.Add(ns, id, v); err != nil {
		t.Fatalf("Add(%d, %d): %v", ns, id, err)
	}
}

func TestNewPanicsOnBadArguments(t *testing.T) {
	for _, c := range [][2]int{{-1, 10}, {8, 0}, {8, -1}} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("New(%d, %d) did not panic", c[0], c[1])
				}
			}()
			New(c[0], c[1])
		}()
	}
}

// TestExactMatchesBruteForce: namespaces up to the rerank size are scanned
// exactly, so the result is the reference's, id and similarity.
func TestExactMatchesBruteForce(t *testing.T) {
	for _, clustered := range []bool{false, true} {
		g := newGen(7, 96, clustered)
		x := New(96, 1000)
		var vecs [][]float32
		for i := range defaultRerank {
			// Unnormalised input: Add must normalise.
			v := g.next(make([]float32, 96))
			vecs = append(vecs, slices.Clone(v))
			for j := range v {
				v[j] *= 3
			}
			mustAdd(t, x, 5, uint64(i), v)
		}
		for range 300 {
			q := g.next(make([]float32, 96))
			want, wsim := bruteBest(vecs, q)
			id, sim, ok := x.Search(5, q)
			if !ok || int(id) != want || math.Abs(float64(sim-wsim)) > 1e-5 {
				t.Fatalf("clustered=%v: Search = %d %.6f %v, brute force %d %.6f", clustered, id, sim, ok, want, wsim)
			}
		}
	}
}

// TestApproximateRecall runs the full three-stage search (namespace larger
// than the shortlist) at realistic dimensions against the brute force.
func TestApproximateRecall(t *testing.T) {
	n, nq := 4000, 100 // over the shortlist, so all three stages run
	const dims = 1024
	for _, clustered := range []bool{false, true} {
		g := newGen(11, dims, clustered)
		x := New(dims, n)
		vecs := make([][]float32, n)
		for i := range vecs {
			vecs[i] = g.next(make([]float32, dims))
			mustAdd(t, x, 0, uint64(i), vecs[i])
		}
		para := make([][]float32, nq)
		fresh := make([][]float32, nq)
		for i := range nq {
			para[i] = g.near(make([]float32, dims), vecs[g.r.IntN(n)], paraphraseNoise)
			fresh[i] = g.next(make([]float32, dims))
		}
		rp, _ := recall(x, vecs, para)
		rf, loss := recall(x, vecs, fresh)
		t.Logf("clustered=%v n=%d: recall@1 paraphrase %.3f, fresh %.3f (worst similarity shortfall %.4f)", clustered, n, rp, rf, loss)
		if rp < 0.99 {
			t.Errorf("clustered=%v: paraphrase recall@1 %.3f < 0.99", clustered, rp)
		}
		if clustered && rf < 0.97 {
			t.Errorf("clustered: fresh-query recall@1 %.3f < 0.97", rf)
		}
	}
}

// TestSearchFindsStoredVectors: a stored vector is its own best match on
// the approximate path too, also after swap-removes moved codes around.
func TestSearchFindsStoredVectors(t *testing.T) {
	const dims, n = 256, 3000
	g := newGen(3, dims, true)
	x := New(dims, n)
	x.rerank, x.shortlist = 16, 128 // force all three stages at a small size
	vecs := map[uint64][]float32{}
	for i := range uint64(n) {
		vecs[i] = g.next(make([]float32, dims))
		mustAdd(t, x, 0, i, vecs[i])
	}
	for i := uint64(0); i < n; i += 3 {
		x.Remove(i)
		delete(vecs, i)
	}
	checkInvariants(t, x)
	for id, v := range vecs {
		got, sim, ok := x.Search(0, v)
		if !ok || got != id || sim < 0.9999 {
			t.Fatalf("Search(vector of %d) = %d %.5f %v", id, got, sim, ok)
		}
	}
}

// TestShrink: a namespace that lost most of its entries gets smaller
// arrays, and its entries stay findable.
func TestShrink(t *testing.T) {
	const dims, n = 64, 5000
	g := newGen(4, dims, false)
	x := New(dims, n)
	x.rerank, x.shortlist = 16, 128
	vecs := make([][]float32, n)
	for i := range vecs {
		vecs[i] = g.next(make([]float32, dims))
		mustAdd(t, x, 0, uint64(i), vecs[i])
	}
	for i := 300; i < n; i++ {
		x.Remove(uint64(i))
	}
	checkInvariants(t, x)
	if c := cap(x.spaces[0].entries); c >= 1200 {
		t.Errorf("namespace of 300 kept capacity %d", c)
	}
	for i := range 300 {
		if id, _, _ := x.Search(0, vecs[i]); id != uint64(i) {
			t.Fatalf("Search(vector of %d) = %d", i, id)
		}
	}
}

// TestShrinkManyNamespaces: the index holds arrays in proportion to the
// entries it holds, however many namespaces once grew large and then lost
// nearly all of theirs (a semantic cache has one per client and
// conversation): a namespace that kept the capacity of its peak, up to
// ~1,000 slots, made max_entries namespaces of one entry each hold
// gigabytes of codes.
func TestShrinkManyNamespaces(t *testing.T) {
	const dims, n, peak, spaces = 64, 1000, 900, 20
	g := newGen(5, dims, false)
	x := New(dims, n)
	id := uint64(0)
	for ns := range uint64(spaces) {
		first := id
		for range peak {
			mustAdd(t, x, ns, id, g.next(make([]float32, dims)))
			id++
		}
		for i := first + 1; i < id; i++ { // evicted, or their answers gone
			x.Remove(i)
		}
	}
	checkInvariants(t, x)
	held := 0
	for _, sp := range x.spaces {
		held += cap(sp.entries)
	}
	if bound := 4*x.Len() + 32*len(x.spaces); held > bound {
		t.Errorf("%d namespaces of %d entries in all hold %d slots, want at most %d", len(x.spaces), x.Len(), held, bound)
	}
}

// TestChurnAtBound: random Adds (evicting), Removes and Touches over a few
// namespaces keep the bookkeeping consistent and every stored vector
// findable.
func TestChurnAtBound(t *testing.T) {
	const dims, max = 32, 40
	r := rand.New(rand.NewPCG(8, 9))
	g := newGen(8, dims, false)
	x := New(dims, max)
	x.rerank, x.shortlist = 4, 8
	vecs := map[uint64][]float32{}
	for step := range 3000 {
		id := uint64(r.IntN(3 * max))
		switch op := r.IntN(10); {
		case op < 6:
			v := g.next(make([]float32, dims))
			mustAdd(t, x, uint64(r.IntN(3)), id, v)
			vecs[id] = v
		case op < 8:
			x.Remove(id)
		default:
			x.Touch(id)
		}
		if step%50 == 0 {
			checkInvariants(t, x)
		}
	}
	checkInvariants(t, x)
	if n := x.Len(); n == 0 || n > max {
		t.Fatalf("Len %d, want 1..%d", n, max)
	}
	x.mu.RLock()
	stored := map[uint64]uint64{}
	for id, e := range x.byID {
		stored[id] = e.sp.ns
	}
	x.mu.RUnlock()
	for id, ns := range stored {
		if got, _, _ := x.Search(ns, vecs[id]); got != id {
			t.Fatalf("Search(vector of %d) = %d", id, got)
		}
	}
}

func TestNamespacesAreIsolated(t *testing.T) {
	x := New(4, 10)
	mustAdd(t, x, 1, 10, axis(4, 0))
	mustAdd(t, x, 2, 20, axis(4, 1))
	mustAdd(t, x, 2, 21, axis(4, 2))
	if id, sim, ok := x.Search(1, axis(4, 1)); !ok || id != 10 || sim != 0 {
		t.Errorf("Search(ns 1) = %d %v %v, want 10 0 true: ns 2's exact match must not be seen", id, sim, ok)
	}
	if id, sim, ok := x.Search(2, axis(4, 1)); !ok || id != 20 || sim != 1 {
		t.Errorf("Search(ns 2) = %d %v %v, want 20 1 true", id, sim, ok)
	}
	if _, _, ok := x.Search(3, axis(4, 1)); ok {
		t.Error("Search of an empty namespace returned ok")
	}
	// Re-adding an id in another namespace moves it.
	mustAdd(t, x, 1, 20, axis(4, 3))
	if id, _, _ := x.Search(2, axis(4, 1)); id != 21 {
		t.Errorf("id 20 still found in ns 2 after moving to ns 1 (got %d)", id)
	}
	x.Remove(10)
	x.Remove(20)
	if _, _, ok := x.Search(1, axis(4, 0)); ok {
		t.Error("Search of an emptied namespace returned ok")
	}
	checkInvariants(t, x)
	if len(x.spaces) != 1 {
		t.Errorf("%d namespaces kept, want 1 (empty ones are dropped)", len(x.spaces))
	}
}

func TestBoundAndEvictionOrder(t *testing.T) {
	x := New(8, 3)
	for id := range uint64(3) {
		mustAdd(t, x, 0, id, axis(8, int(id)))
	}
	// Full: the 4th Add evicts the oldest.
	mustAdd(t, x, 0, 3, axis(8, 3))
	if x.Len() != 3 || has(x, 0) {
		t.Fatalf("after the 4th Add: Len %d, has 0 %v: want 3, oldest (0) evicted", x.Len(), has(x, 0))
	}
	// 1 and 2 were passed over by the clock hand without being used since;
	// a Touch gives 1 a second chance, so 2 goes.
	x.Touch(1)
	x.Touch(99) // unknown: no-op
	mustAdd(t, x, 0, 4, axis(8, 4))
	if !has(x, 1) || has(x, 2) {
		t.Fatalf("touched 1 must survive and 2 be evicted: has 1 %v, has 2 %v", has(x, 1), has(x, 2))
	}
	// Search does not touch: 1 is found, but it is the one entry not added
	// or touched since the hand last passed it, so it goes next.
	if id, _, _ := x.Search(0, axis(8, 1)); id != 1 {
		t.Fatalf("Search = %d, want 1", id)
	}
	mustAdd(t, x, 0, 5, axis(8, 5))
	if has(x, 1) || !has(x, 3) || !has(x, 4) || !has(x, 5) {
		t.Fatalf("want {3,4,5} after evicting 1: has 1 %v 3 %v 4 %v 5 %v", has(x, 1), has(x, 3), has(x, 4), has(x, 5))
	}
	// Replacing an id at the bound evicts nothing.
	mustAdd(t, x, 0, 4, axis(8, 6))
	if x.Len() != 3 || !has(x, 3) || !has(x, 5) {
		t.Fatal("replacing an id evicted another entry")
	}
	// A Remove frees room: the next Add evicts nothing.
	x.Remove(3)
	mustAdd(t, x, 0, 7, axis(8, 7))
	if x.Len() != 3 || !has(x, 4) || !has(x, 5) || !has(x, 7) {
		t.Fatal("Add after Remove evicted an entry")
	}
	checkInvariants(t, x)
}

// TestEvictionIsLRUUnderChurn: at the bound, entries touched since the
// clock hand last passed outlive those that were not.
func TestEvictionIsLRUUnderChurn(t *testing.T) {
	const max = 100
	x := New(8, max)
	v := axis(8, 0)
	for id := range uint64(max) {
		mustAdd(t, x, id%7, id, v)
	}
	hot := []uint64{3, 50, 97}
	for next := uint64(max); next < 10*max; next++ {
		for _, h := range hot {
			x.Touch(h)
		}
		mustAdd(t, x, next%7, next, v)
		if x.Len() != max {
			t.Fatalf("Len %d, want %d", x.Len(), max)
		}
	}
	for _, h := range hot {
		if !has(x, h) {
			t.Errorf("hot entry %d was evicted", h)
		}
	}
	// The rest is the most recently added, as LRU would keep.
	for id := uint64(10*max - (max - len(hot))); id < 10*max; id++ {
		if !has(x, id) {
			t.Errorf("recent entry %d was evicted", id)
		}
	}
	checkInvariants(t, x)
}

func TestRemove(t *testing.T) {
	x := New(4, 10)
	mustAdd(t, x, 0, 1, axis(4, 0))
	mustAdd(t, x, 0, 2, axis(4, 1))
	x.Remove(1)
	x.Remove(1)  // already gone
	x.Remove(42) // never there
	if x.Len() != 1 {
		t.Fatalf("Len %d, want 1", x.Len())
	}
	if id, _, ok := x.Search(0, axis(4, 0)); !ok || id != 2 {
		t.Fatalf("Search = %d %v, want the remaining 2", id, ok)
	}
	x.Remove(2)
	if _, _, ok := x.Search(0, axis(4, 0)); ok || x.Len() != 0 {
		t.Fatal("index not empty after removing everything")
	}
	mustAdd(t, x, 0, 1, axis(4, 2)) // reusable after emptying
	checkInvariants(t, x)
}

func TestDims(t *testing.T) {
	x := New(0, 10)
	if err := x.Add(0, 1, nil); !errors.Is(err, ErrDims) {
		t.Errorf("Add(empty) = %v, want ErrDims", err)
	}
	if err := x.Add(0, 1, make([]float32, 3)); !errors.Is(err, ErrZeroVector) {
		t.Errorf("Add(zero) = %v, want ErrZeroVector", err)
	}
	// A failed Add fixes nothing: the first successful one sets dims.
	mustAdd(t, x, 0, 1, axis(5, 0))
	if err := x.Add(0, 2, axis(3, 0)); !errors.Is(err, ErrDims) {
		t.Errorf("Add(3 dims into 5) = %v, want ErrDims", err)
	}
	if _, _, ok := x.Search(0, axis(3, 0)); ok {
		t.Error("Search with wrong dims returned ok")
	}
	y := New(8, 10)
	if err := y.Add(0, 1, axis(7, 0)); !errors.Is(err, ErrDims) {
		t.Errorf("Add(7 dims into New(8)) = %v, want ErrDims", err)
	}
	if x.Len() != 1 || y.Len() != 0 {
		t.Errorf("failed Adds changed Len: %d %d", x.Len(), y.Len())
	}
}

func TestBadVectors(t *testing.T) {
	x := New(3, 10)
	nan := float32(math.NaN())
	inf := float32(math.Inf(1))
	for _, c := range []struct {
		v    []float32
		want error
	}{
		{[]float32{0, 0, 0}, ErrZeroVector},
		{[]float32{0, float32(math.Copysign(0, -1)), 0}, ErrZeroVector},
		{[]float32{1, nan, 0}, ErrNotFinite},
		{[]float32{1, inf, 0}, ErrNotFinite},
		{[]float32{-inf, 0, 0}, ErrNotFinite},
	} {
		if err := x.Add(0, 1, c.v); !errors.Is(err, c.want) {
			t.Errorf("Add(%v) = %v, want %v", c.v, err, c.want)
		}
	}
	// Tiny and huge components still have a direction.
	mustAdd(t, x, 0, 1, []float32{1e-30, 0, 0})
	mustAdd(t, x, 0, 2, []float32{0, 3e38, 3e38})
	if id, sim, ok := x.Search(0, []float32{0, 1, 1}); !ok || id != 2 || math.Abs(float64(sim)-1) > 1e-6 {
		t.Errorf("Search = %d %v %v, want 2 1 true", id, sim, ok)
	}
	if id, sim, ok := x.Search(0, []float32{1e-38, 0, 0}); !ok || id != 1 || math.Abs(float64(sim)-1) > 1e-6 {
		t.Errorf("Search(tiny) = %d %v %v, want 1 1 true", id, sim, ok)
	}
	for _, q := range [][]float32{{0, 0, 0}, {nan, 1, 1}} {
		if _, _, ok := x.Search(0, q); ok {
			t.Errorf("Search(%v) returned ok", q)
		}
	}
}

func TestAddCopiesAndNormalises(t *testing.T) {
	x := New(2, 10)
	v := []float32{3, 4}
	mustAdd(t, x, 0, 1, v)
	if v[0] != 3 || v[1] != 4 {
		t.Fatalf("Add modified its argument: %v", v)
	}
	v[0], v[1] = -4, 3 // the index must hold its own copy
	id, sim, ok := x.Search(0, []float32{6, 8})
	if !ok || id != 1 || math.Abs(float64(sim)-1) > 1e-6 {
		t.Fatalf("Search = %d %v %v, want 1 1 true", id, sim, ok)
	}
	if _, sim, _ := x.Search(0, []float32{-3, -4}); math.Abs(float64(sim)+1) > 1e-6 {
		t.Fatalf("opposite vector: similarity %v, want -1", sim)
	}
}

// TestModel drives random operations against a plain map and checks
// Search (exact path) and the internal bookkeeping.
func TestModel(t *testing.T) {
	const dims, max = 16, 64
	r := rand.New(rand.NewPCG(5, 6))
	x := New(dims, 1<<20) // no eviction: the model has no LRU
	type item struct {
		ns  uint64
		vec []float32
	}
	model := map[uint64]item{}
	g := newGen(9, dims, false)
	for step := range 5000 {
		id := uint64(r.IntN(max))
		switch op := r.IntN(10); {
		case op < 5:
			ns := uint64(r.IntN(4))
			v := g.next(make([]float32, dims))
			mustAdd(t, x, ns, id, v)
			model[id] = item{ns, v}
		case op < 7:
			x.Remove(id)
			delete(model, id)
		default:
			ns := uint64(r.IntN(4))
			q := g.next(make([]float32, dims))
			var ids []uint64
			var vecs [][]float32
			for mid, it := range model {
				if it.ns == ns {
					ids = append(ids, mid)
					vecs = append(vecs, it.vec)
				}
			}
			got, _, ok := x.Search(ns, q)
			if ok != (len(ids) > 0) {
				t.Fatalf("step %d: Search ok %v with %d in ns", step, ok, len(ids))
			}
			if ok {
				if want, wsim := bruteBest(vecs, q); got != ids[want] {
					// Only a float32-vs-float64 near tie may differ.
					if gsim := dot(unitize(q), model[got].vec); math.Abs(float64(gsim-wsim)) > 1e-6 {
						t.Fatalf("step %d: Search = %d (%v), want %d (%v)", step, got, gsim, ids[want], wsim)
					}
				}
			}
		}
		if x.Len() != len(model) {
			t.Fatalf("step %d: Len %d, model %d", step, x.Len(), len(model))
		}
	}
	checkInvariants(t, x)
}

// TestConcurrent runs Search, Touch and Len against Add and Remove (with
// evictions) in parallel; run it with -race.
func TestConcurrent(t *testing.T) {
	const dims, max, workers = 64, 300, 6
	x := New(dims, max)
	x.rerank, x.shortlist = 8, 32 // exercise every stage with concurrent swaps
	iters := 3000
	if testing.Short() {
		iters = 500
	}
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			g := newGen(uint64(w), dims, true)
			r := rand.New(rand.NewPCG(uint64(w), 1))
			v := make([]float32, dims)
			for i := range iters {
				ns := uint64(r.IntN(3))
				id := uint64(r.IntN(2 * max))
				switch {
				case w < 2 && i%4 == 0:
					if err := x.Add(ns, id, g.next(v)); err != nil {
						t.Error(err)
						return
					}
				case w < 2 && i%4 == 1:
					x.Remove(id)
				default:
					if got, sim, ok := x.Search(ns, g.next(v)); ok {
						if sim < -1 || sim > 1 {
							t.Errorf("similarity %v out of range", sim)
						}
						x.Touch(got)
					}
					if n := x.Len(); n > max {
						t.Errorf("Len %d over the bound", n)
					}
				}
			}
		}()
	}
	wg.Wait()
	checkInvariants(t, x)
}

func TestKernels(t *testing.T) {
	for _, c := range []struct {
		x    float32
		want uint32
	}{
		{1, 1}, {math.SmallestNonzeroFloat32, 1}, {float32(math.Inf(1)), 1},
		{0, 0}, {float32(math.Copysign(0, -1)), 0}, {-1, 0},
		{-math.SmallestNonzeroFloat32, 0}, {float32(math.Inf(-1)), 0}, {float32(math.NaN()), 1},
	} {
		// NaN never reaches positive (Add rejects it); the test pins the
		// bit trick, which reads a positive NaN as positive.
		if got := positive(c.x); got != c.want {
			t.Errorf("positive(%v) = %d, want %d", c.x, got, c.want)
		}
	}

	r := rand.New(rand.NewPCG(1, 1))
	for _, words := range []int{1, 3, 4, 5} {
		n := 37
		codes := make([]uint64, n*words)
		for i := range codes {
			codes[i] = r.Uint64()
		}
		q := codes[:words:words]
		dist := make([]uint16, n)
		hist := make([]int32, words*64+1)
		hist[3] = 99 // must be cleared
		coarseScan(dist, hist, q, codes)
		want := make([]int32, len(hist))
		for i := range n {
			d := hamming(q, codes[i*words:])
			if int(dist[i]) != d {
				t.Fatalf("words=%d: dist[%d] = %d, want %d", words, i, dist[i], d)
			}
			want[d]++
		}
		if !slices.Equal(hist, want) {
			t.Fatalf("words=%d: histogram differs", words)
		}
		for k := 1; k <= n; k++ {
			sel := appendNearest(nil, dist, hist, k, nil)
			if len(sel) != k {
				t.Fatalf("appendNearest(k=%d) kept %d", k, len(sel))
			}
			sorted := slices.Sorted(slices.Values(dist))
			for _, i := range sel {
				if dist[i] > sorted[k-1] {
					t.Fatalf("appendNearest(k=%d) kept distance %d above the k-th %d", k, dist[i], sorted[k-1])
				}
			}
		}
	}

	a, b := make([]float32, 103), make([]float32, 103)
	vecs := make([][]float32, 9)
	for i := range a {
		a[i], b[i] = float32(r.NormFloat64()), float32(r.NormFloat64())
	}
	for i := range vecs {
		vecs[i] = make([]float32, 103)
		for j := range vecs[i] {
			vecs[i][j] = float32(r.NormFloat64())
		}
	}
	var want float64
	for i := range a {
		want += float64(a[i]) * float64(b[i])
	}
	if got := dot(a, b); math.Abs(float64(got)-want) > 1e-4 {
		t.Errorf("dot = %v, want %v", got, want)
	}
	cand := []int32{8, 0, 3, 5, 1, 7, 2}
	bi, bs := best(a, vecs, cand)
	for i, c := range cand {
		if s := dot(a, vecs[c]); s > bs+1e-5 || (i == bi && math.Abs(float64(s-bs)) > 1e-5) {
			t.Errorf("best = %d (%v), but candidate %d has %v", bi, bs, i, s)
		}
	}
}

// TestSearchTop: in a namespace scanned exactly, SearchTop returns the k
// most similar vectors in order, as a brute force ranks them; in a large
// one its first match is Search's; k beyond the namespace returns all.
func TestSearchTop(t *testing.T) {
	g := newGen(11, 96, true)
	x := New(96, 5000)
	var vecs [][]float32
	for i := range defaultRerank {
		v := g.next(make([]float32, 96))
		vecs = append(vecs, unitize(slices.Clone(v)))
		mustAdd(t, x, 1, uint64(i), v)
	}
	for range 100 {
		q := unitize(g.next(make([]float32, 96)))
		type ranked struct {
			id  int
			sim float64
		}
		var all []ranked
		for i, v := range vecs {
			var s float64
			for j := range q {
				s += float64(q[j]) * float64(v[j])
			}
			all = append(all, ranked{i, s})
		}
		slices.SortFunc(all, func(a, b ranked) int { return cmp.Compare(b.sim, a.sim) })
		got := x.SearchTop(1, q, 4, nil)
		if len(got) != 4 {
			t.Fatalf("%d matches, want 4", len(got))
		}
		for r, m := range got {
			if int(m.ID) != all[r].id || math.Abs(float64(m.Similarity)-all[r].sim) > 1e-5 {
				t.Fatalf("rank %d: %+v, brute force %+v", r, m, all[r])
			}
		}
	}
	if got := x.SearchTop(2, vecs[0], 4, nil); len(got) != 0 {
		t.Errorf("an empty namespace: %+v", got)
	}
	mustAdd(t, x, 3, 9999, vecs[0])
	if got := x.SearchTop(3, vecs[0], 4, nil); len(got) != 1 || got[0].ID != 9999 {
		t.Errorf("a namespace of one: %+v", got)
	}
	// a namespace on the three-stage path
	for i := range 2000 {
		mustAdd(t, x, 4, uint64(10000+i), g.next(make([]float32, 96)))
	}
	for range 50 {
		q := g.next(make([]float32, 96))
		id, sim, _ := x.Search(4, q)
		got := x.SearchTop(4, q, 3, nil)
		if len(got) != 3 || got[0].ID != id || got[0].Similarity != sim || got[1].Similarity > got[0].Similarity || got[2].Similarity > got[1].Similarity {
			t.Fatalf("SearchTop %+v, Search %d %v", got, id, sim)
		}
	}
}
