package vecindex

import (
	"fmt"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"
)

// Run with, e.g.:
//
//	go test -run '^$' -bench . -benchtime 3000x -timeout 30m ./internal/vecindex
//
// Every Search/Add benchmark reports ns/op and p99-ns (the 99th percentile
// of the individually timed operations). Building the indexes is not timed
// but is logged ("build"), as Add cost matters on the request path.

const numQueries = 512

// fill builds an index of n vectors from g in namespace 0 and logs the time.
func fill(tb testing.TB, g *gen, n int) *Index {
	x := New(g.dims, n)
	v := make([]float32, g.dims)
	start := time.Now()
	for i := range n {
		if err := x.Add(0, uint64(i), g.next(v)); err != nil {
			tb.Fatal(err)
		}
	}
	tb.Logf("build %d x %d: %v (%.1f µs/Add)", n, g.dims, time.Since(start), float64(time.Since(start).Microseconds())/float64(n))
	runtime.GC() // collect the build's garbage now, not during the timed loop
	return x
}

// queries returns fresh vectors of g's shape: similar to the set's
// vectors, identical to none (a cache miss is the common case).
func queries(g *gen) [][]float32 {
	qs := make([][]float32, numQueries)
	for i := range qs {
		qs[i] = g.next(make([]float32, g.dims))
	}
	return qs
}

// p99 reports the 99th percentile of lat as the "p99-ns" metric.
func p99(b *testing.B, lat []time.Duration) {
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[(len(lat)-1)*99/100].Nanoseconds()), "p99-ns")
}

var sizes = []struct {
	name string
	n    int
}{{"10k", 10_000}, {"100k", 100_000}}

var dimsList = []int{1024, 1536}

func shapes() []struct {
	name      string
	clustered bool
} {
	return []struct {
		name      string
		clustered bool
	}{{"random", false}, {"clustered", true}}
}

// BenchmarkSearch is the worst case: one namespace holding all entries.
func BenchmarkSearch(b *testing.B) {
	for _, sz := range sizes {
		for _, dims := range dimsList {
			b.Run(fmt.Sprintf("%sx%d", sz.name, dims), func(b *testing.B) {
				for _, sh := range shapes() {
					b.Run(sh.name, func(b *testing.B) {
						g := newGen(1, dims, sh.clustered)
						x := fill(b, g, sz.n)
						qs := queries(g)
						lat := make([]time.Duration, 0, 1<<16)
						i := 0
						for b.Loop() {
							t := time.Now()
							if _, _, ok := x.Search(0, qs[i%len(qs)]); !ok {
								b.Fatal("no result")
							}
							lat = append(lat, time.Since(t))
							i++
						}
						p99(b, lat)
					})
				}
			})
		}
	}
}

// BenchmarkSearchNamespaces is the common production case: 100k entries
// spread over 1000 per-client namespaces of 100.
func BenchmarkSearchNamespaces(b *testing.B) {
	const n, spaces = 100_000, 1000
	for _, dims := range dimsList {
		b.Run(fmt.Sprintf("100kx%d/1000ns", dims), func(b *testing.B) {
			g := newGen(1, dims, true)
			x := New(dims, n)
			v := make([]float32, dims)
			for i := range n {
				if err := x.Add(uint64(i%spaces), uint64(i), g.next(v)); err != nil {
					b.Fatal(err)
				}
			}
			qs := queries(g)
			lat := make([]time.Duration, 0, 1<<16)
			i := 0
			for b.Loop() {
				t := time.Now()
				x.Search(uint64(i%spaces), qs[i%len(qs)])
				lat = append(lat, time.Since(t))
				i++
			}
			p99(b, lat)
		})
	}
}

// BenchmarkSearchConcurrent is the target scenario: 100k x 1024 in one
// namespace, searched by 1 goroutine (the machine has a core to spare) or
// by GOMAXPROCS goroutines (saturated: p99 then includes waiting for a
// core), while another goroutine adds (each Add evicting) every addEvery.
// ns/op is wall time per search over all searchers (inverse throughput);
// p99-ns is per search.
func BenchmarkSearchConcurrent(b *testing.B) {
	g := newGen(1, 1024, true)
	var x *Index // built once: RunParallel benchmarks run more than once
	qs := queries(g)
	adds := queries(newGen(2, 1024, true))
	nextID := uint64(1_000_000) // fresh ids, so every Add evicts
	for _, searchers := range []int{1, runtime.GOMAXPROCS(0)} {
		for _, addEvery := range []time.Duration{0, 10 * time.Millisecond, time.Millisecond} {
			name := "noadds"
			if addEvery > 0 {
				name = fmt.Sprintf("add-every-%v", addEvery)
			}
			b.Run(fmt.Sprintf("100kx1024/clustered/%dsearchers/%s", searchers, name), func(b *testing.B) {
				if x == nil {
					x = fill(b, g, 100_000)
				}
				stop := make(chan struct{})
				var wg sync.WaitGroup
				if addEvery > 0 {
					wg.Add(1)
					go func() {
						defer wg.Done()
						tick := time.NewTicker(addEvery)
						defer tick.Stop()
						for {
							select {
							case <-stop:
								return
							case <-tick.C:
								nextID++
								_ = x.Add(0, nextID, adds[nextID%uint64(len(adds))])
							}
						}
					}()
				}
				var mu sync.Mutex
				var all []time.Duration
				search := func(next func() bool) {
					lat := make([]time.Duration, 0, 1<<14)
					i := 0
					for next() {
						t := time.Now()
						x.Search(0, qs[i%len(qs)])
						lat = append(lat, time.Since(t))
						i++
					}
					mu.Lock()
					all = append(all, lat...)
					mu.Unlock()
				}
				b.ResetTimer()
				if searchers == 1 {
					search(b.Loop)
				} else {
					b.SetParallelism(searchers / runtime.GOMAXPROCS(0))
					b.RunParallel(func(pb *testing.PB) { search(pb.Next) })
				}
				b.StopTimer()
				close(stop)
				wg.Wait()
				p99(b, all)
			})
		}
	}
}

// BenchmarkAdd measures Add into a full index (so every Add also evicts),
// in one namespace of n.
func BenchmarkAdd(b *testing.B) {
	for _, sz := range sizes {
		for _, dims := range dimsList {
			b.Run(fmt.Sprintf("%sx%d", sz.name, dims), func(b *testing.B) {
				g := newGen(1, dims, true)
				x := fill(b, g, sz.n)
				vs := queries(g)
				lat := make([]time.Duration, 0, 1<<16)
				i := 0
				for b.Loop() {
					t := time.Now()
					if err := x.Add(0, uint64(sz.n+i), vs[i%len(vs)]); err != nil {
						b.Fatal(err)
					}
					lat = append(lat, time.Since(t))
					i++
				}
				p99(b, lat)
				if x.Len() != sz.n {
					b.Fatalf("Len %d, want %d", x.Len(), sz.n)
				}
			})
		}
	}
}

// BenchmarkMemory reports the heap growth per entry of filling an index
// with 100k vectors (vector, sign codes, bookkeeping, map). The fill runs
// once whatever -benchtime says; ns/op is not meaningful.
func BenchmarkMemory(b *testing.B) {
	const n = 100_000
	for _, dims := range dimsList {
		b.Run(fmt.Sprintf("100kx%d", dims), func(b *testing.B) {
			g := newGen(1, dims, false)
			v := make([]float32, dims)
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			x := New(dims, n)
			for i := range n {
				_ = x.Add(uint64(i%2), uint64(i), g.next(v))
			}
			runtime.GC()
			runtime.ReadMemStats(&after)
			runtime.KeepAlive(x)
			for b.Loop() {
			}
			b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/n, "B/entry")
			b.ReportMetric(float64(dims*4), "vector-B")
		})
	}
}

// BenchmarkRecall measures recall@1 against an exact scan at 100k x 1024
// (slow: the reference scan reads 400 MB per query). Query kinds: "fresh"
// (a new vector of the set's shape: for random data the true best has
// cosine ~0.13 and the runner-up is within ~0.005), and "paraphrase" (a
// stored vector plus noise, cosine ~0.96: what a cache hit looks like).
func BenchmarkRecall(b *testing.B) {
	const n, dims, nq = 100_000, 1024, 200
	for _, sh := range shapes() {
		b.Run(sh.name, func(b *testing.B) {
			g := newGen(1, dims, sh.clustered)
			vecs := make([][]float32, n)
			x := New(dims, n)
			for i := range vecs {
				vecs[i] = g.next(make([]float32, dims))
				_ = x.Add(0, uint64(i), vecs[i])
			}
			fresh := make([][]float32, nq)
			para := make([][]float32, nq)
			for i := range nq {
				fresh[i] = g.next(make([]float32, dims))
				para[i] = g.near(make([]float32, dims), vecs[g.r.IntN(n)], paraphraseNoise)
			}
			// Measured once whatever -benchtime says; ns/op is not meaningful.
			rf, lf := recall(x, vecs, fresh)
			rp, lp := recall(x, vecs, para)
			for b.Loop() {
			}
			b.ReportMetric(rf, "recall-fresh")
			b.ReportMetric(float64(lf), "maxsimloss-fresh")
			b.ReportMetric(rp, "recall-paraphrase")
			b.ReportMetric(float64(lp), "maxsimloss-paraphrase")
		})
	}
}

// recall returns the fraction of qs for which x finds the exact best, and
// the largest similarity shortfall when it does not.
func recall(x *Index, vecs [][]float32, qs [][]float32) (float64, float32) {
	hits := make([]bool, len(qs))
	loss := make([]float32, len(qs))
	var wg sync.WaitGroup
	workers := runtime.GOMAXPROCS(0)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < len(qs); i += workers {
				want, wsim := bruteBest(vecs, qs[i])
				id, sim, _ := x.Search(0, qs[i])
				hits[i] = int(id) == want
				loss[i] = wsim - sim
			}
		}()
	}
	wg.Wait()
	h := 0
	var worst float32
	for i := range hits {
		if hits[i] {
			h++
		} else {
			worst = max(worst, loss[i])
		}
	}
	return float64(h) / float64(len(qs)), worst
}

// BenchmarkExactScan is the rejected alternative: the same index with the
// shortlist disabled, so every Search computes all float32 dot products
// of the namespace. 30 timed searches whatever -benchtime says (one takes
// ~0.1 s at 100k); ns/op is not meaningful, mean-ns and p99-ns are.
func BenchmarkExactScan(b *testing.B) {
	for _, sz := range sizes {
		b.Run(fmt.Sprintf("%sx1024/clustered", sz.name), func(b *testing.B) {
			g := newGen(1, 1024, true)
			x := fill(b, g, sz.n)
			x.rerank = sz.n // scan everything exactly
			qs := queries(g)
			lat := make([]time.Duration, 30)
			var sum time.Duration
			for i := range lat {
				t := time.Now()
				x.Search(0, qs[i])
				lat[i] = time.Since(t)
				sum += lat[i]
			}
			for b.Loop() {
			}
			b.ReportMetric(float64(sum.Nanoseconds())/float64(len(lat)), "mean-ns")
			p99(b, lat)
		})
	}
}
