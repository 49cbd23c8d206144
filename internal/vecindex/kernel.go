package vecindex

import (
	"math"
	"math/bits"
)

// coarseWordsMax caps the coarse sign code at 256 bits: it is the code
// scanned for every entry of a large namespace, so its size sets the scan
// cost (about 0.2 ms per 100k entries here, against 0.7 ms for 1024 bits).
const coarseWordsMax = 4

// codeWords returns the lengths in 64-bit words of the full code (one sign
// bit per dimension) and the coarse code (one sign bit per group of
// consecutive dimensions) for dims dimensions.
func codeWords(dims int) (full, coarse int) {
	full = (dims + 63) / 64
	return full, min(full, coarseWordsMax)
}

// normalize writes src/|src| into dst and reports the squared norm of src
// (computed in float64 so that tiny or huge components neither underflow
// to a false zero nor overflow).
//
// Four independent sums: one would wait for each addition to finish before
// the next (measured 1.1 µs against 0.3 µs at 1024 dims; every lookup and
// every stored vector is normalised).
func normalize(dst, src []float32) float64 {
	var s0, s1, s2, s3 float64
	i := 0
	for ; i+4 <= len(src); i += 4 {
		v := src[i : i+4 : i+4]
		s0 += float64(v[0]) * float64(v[0])
		s1 += float64(v[1]) * float64(v[1])
		s2 += float64(v[2]) * float64(v[2])
		s3 += float64(v[3]) * float64(v[3])
	}
	for ; i < len(src); i++ {
		s0 += float64(src[i]) * float64(src[i])
	}
	ss := (s0 + s1) + (s2 + s3)
	if ss == 0 || math.IsNaN(ss) || math.IsInf(ss, 0) {
		return ss
	}
	inv := 1 / math.Sqrt(ss)
	dst = dst[:len(src)]
	if inv > 1e-30 && inv < 1e30 {
		// the usual case: a float32 scale is exact enough and saves two
		// conversions a component
		inv32 := float32(inv)
		for i, v := range src {
			dst[i] = v * inv32
		}
		return ss
	}
	for i, v := range src {
		dst[i] = float32(float64(v) * inv)
	}
	return ss
}

// encode writes the sign codes of v. The full code has bit i set when
// v[i] > 0, so the Hamming distance between two full codes estimates the
// angle between the vectors (random-hyperplane LSH on the coordinate axes).
// The coarse code does the same for the sums of len(coarse)*64 groups of
// consecutive dimensions: a cheaper, noisier estimate that still looks at
// every dimension.
func encode(full, coarse []uint64, v []float32) {
	// Branch-free: the sign of a random coordinate is a coin flip, and a
	// mispredicted branch per dimension costs more than the rest of Add.
	for w := range full {
		chunk := v[w*64 : min(w*64+64, len(v))]
		var word uint64
		for j, x := range chunk {
			word |= uint64(positive(x)) << uint(j)
		}
		full[w] = word
	}
	nb := len(coarse) * 64
	d := len(v)
	for w := range coarse {
		var word uint64
		for j := range 64 {
			b := w*64 + j
			var s float32
			for _, x := range v[b*d/nb : (b+1)*d/nb] {
				s += x
			}
			word |= uint64(positive(s)) << uint(j)
		}
		coarse[w] = word
	}
}

// positive returns 1 if x > 0 and 0 otherwise, without a branch. (A NaN
// with the sign bit clear counts as positive; Add rejects NaN anyway.)
func positive(x float32) uint32 {
	b := math.Float32bits(x)
	// x > 0 means sign bit clear and some other bit set.
	nonzero := (b & 0x7fffffff) + 0x7fffffff // bit 31 set iff b&0x7fffffff != 0
	return (^b & nonzero) >> 31
}

// dot returns the dot product of a and b (len(b) >= len(a)). Four
// independent accumulators let the CPU overlap the multiply-adds; that is
// the fastest plain-Go form measured here (about 260 ns at 1024 dims).
func dot(a, b []float32) float32 {
	b = b[:len(a)]
	var s0, s1, s2, s3 float32
	i := 0
	for ; i+4 <= len(a); i += 4 {
		aa := a[i : i+4 : i+4]
		bb := b[i : i+4 : i+4]
		s0 += aa[0] * bb[0]
		s1 += aa[1] * bb[1]
		s2 += aa[2] * bb[2]
		s3 += aa[3] * bb[3]
	}
	for ; i < len(a); i++ {
		s0 += a[i] * b[i]
	}
	return (s0 + s1) + (s2 + s3)
}

// hamming returns the number of differing bits of a and b (len(b) >= len(a)).
func hamming(a, b []uint64) int {
	b = b[:len(a)]
	n := 0
	i := 0
	for ; i+4 <= len(a); i += 4 {
		aa := a[i : i+4 : i+4]
		bb := b[i : i+4 : i+4]
		n += bits.OnesCount64(aa[0]^bb[0]) + bits.OnesCount64(aa[1]^bb[1]) +
			bits.OnesCount64(aa[2]^bb[2]) + bits.OnesCount64(aa[3]^bb[3])
	}
	for ; i < len(a); i++ {
		n += bits.OnesCount64(a[i] ^ b[i])
	}
	return n
}

// dot4 returns the dot products of q with a, b, c and d (each at least
// len(q) long). Reranking reads candidate vectors from all over memory;
// streaming four at once keeps four memory reads in flight instead of one
// and measured 2.6x faster than four dot calls (84 µs against 216 µs for
// 256 random vectors of 1024 dims out of 100k).
func dot4(q, a, b, c, d []float32) (float32, float32, float32, float32) {
	a, b, c, d = a[:len(q)], b[:len(q)], c[:len(q)], d[:len(q)]
	var sa, sb, sc, sd float32
	for i, x := range q {
		sa += x * a[i]
		sb += x * b[i]
		sc += x * c[i]
		sd += x * d[i]
	}
	return sa, sb, sc, sd
}

// best returns the index in cand and the dot product with q of the vector
// vecs[cand[i]] most similar to q.
func best(q []float32, vecs [][]float32, cand []int32) (int, float32) {
	bi, bs := -1, float32(math.Inf(-1))
	i := 0
	for ; i+4 <= len(cand); i += 4 {
		c := cand[i : i+4 : i+4]
		s0, s1, s2, s3 := dot4(q, vecs[c[0]], vecs[c[1]], vecs[c[2]], vecs[c[3]])
		if s0 > bs {
			bi, bs = i, s0
		}
		if s1 > bs {
			bi, bs = i+1, s1
		}
		if s2 > bs {
			bi, bs = i+2, s2
		}
		if s3 > bs {
			bi, bs = i+3, s3
		}
	}
	for ; i < len(cand); i++ {
		if s := dot(q, vecs[cand[i]]); s > bs {
			bi, bs = i, s
		}
	}
	return bi, bs
}

// coarseScan writes the Hamming distance from q to each of the len(dist)
// codes packed in codes (len(q) words each) and returns their histogram
// (len(hist) > 64*len(q); cleared here). The 4-word case is the hot loop of
// a large namespace: unrolled by four with one histogram per lane, because
// with a single histogram consecutive increments of the same bucket stall
// on store-to-load forwarding (measured: +40% scan time).
func coarseScan(dist []uint16, hist []int32, q, codes []uint64) {
	clear(hist)
	i := 0
	if len(q) == 4 && len(hist) >= 257 {
		var h [4][257]int32
		q0, q1, q2, q3 := q[0], q[1], q[2], q[3]
		codes = codes[:4*len(dist)]
		for ; i+4 <= len(dist); i += 4 {
			c := codes[4*i : 4*i+16 : 4*i+16]
			d0 := bits.OnesCount64(q0^c[0]) + bits.OnesCount64(q1^c[1]) + bits.OnesCount64(q2^c[2]) + bits.OnesCount64(q3^c[3])
			d1 := bits.OnesCount64(q0^c[4]) + bits.OnesCount64(q1^c[5]) + bits.OnesCount64(q2^c[6]) + bits.OnesCount64(q3^c[7])
			d2 := bits.OnesCount64(q0^c[8]) + bits.OnesCount64(q1^c[9]) + bits.OnesCount64(q2^c[10]) + bits.OnesCount64(q3^c[11])
			d3 := bits.OnesCount64(q0^c[12]) + bits.OnesCount64(q1^c[13]) + bits.OnesCount64(q2^c[14]) + bits.OnesCount64(q3^c[15])
			dd := dist[i : i+4 : i+4]
			dd[0], dd[1], dd[2], dd[3] = uint16(d0), uint16(d1), uint16(d2), uint16(d3)
			h[0][d0]++
			h[1][d1]++
			h[2][d2]++
			h[3][d3]++
		}
		for b := range 257 {
			hist[b] = h[0][b] + h[1][b] + h[2][b] + h[3][b]
		}
	}
	w := len(q)
	for ; i < len(dist); i++ {
		d := hamming(q, codes[w*i:w*i+w])
		dist[i] = uint16(d)
		hist[d]++
	}
}

// cutoff returns the smallest distance t such that at least k distances
// counted in hist are <= t, and how many distances equal t may be taken so
// that exactly k are taken in all (k <= total count).
func cutoff(hist []int32, k int) (t int, takeAtT int) {
	sum := 0
	for t = range hist {
		c := int(hist[t])
		if sum+c >= k {
			return t, k - sum
		}
		sum += c
	}
	return len(hist) - 1, int(hist[len(hist)-1])
}
