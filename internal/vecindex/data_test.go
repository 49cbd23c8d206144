package vecindex

import (
	"math"
	"math/rand/v2"
)

// Test data. Real embeddings are neither uniform nor normalised the same
// way, so two shapes bracket them: uniform random unit vectors (no
// structure, the hardest case for any shortlist) and a clustered set
// (questions cluster by topic: each vector sits at cosine ~0.8 from one of
// a few hundred centres, ~0.64 from its cluster's other members).

const (
	numCentres = 300
	// clusterNoise is the norm of the noise added to a unit centre:
	// cos(vector, centre) = 1/sqrt(1+0.75²) = 0.8.
	clusterNoise = 0.75
	// paraphraseNoise makes a near-duplicate of a stored vector (cosine
	// ~0.96), the query a semantic cache exists to answer.
	paraphraseNoise = 0.3
)

// gen makes reproducible test vectors of one shape.
type gen struct {
	r       *rand.Rand
	dims    int
	centres [][]float32 // nil for the random shape
}

func newGen(seed uint64, dims int, clustered bool) *gen {
	g := &gen{r: rand.New(rand.NewPCG(seed, 0x5eed)), dims: dims}
	if clustered {
		g.centres = make([][]float32, numCentres)
		for i := range g.centres {
			g.centres[i] = g.unit(make([]float32, dims))
		}
	}
	return g
}

// unit fills v with a uniformly random unit vector.
func (g *gen) unit(v []float32) []float32 {
	for i := range v {
		v[i] = float32(g.r.NormFloat64())
	}
	return unitize(v)
}

// near fills v with c plus Gaussian noise of norm ~eps, normalised.
func (g *gen) near(v, c []float32, eps float64) []float32 {
	sd := eps / math.Sqrt(float64(len(c)))
	for i := range v {
		v[i] = c[i] + float32(g.r.NormFloat64()*sd)
	}
	return unitize(v)
}

// next fills v with the next vector of the data set (also used as a
// "fresh question" query: similar to the set, identical to nothing).
func (g *gen) next(v []float32) []float32 {
	if g.centres == nil {
		return g.unit(v)
	}
	return g.near(v, g.centres[g.r.IntN(len(g.centres))], clusterNoise)
}

func unitize(v []float32) []float32 {
	normalize(v, v)
	return v
}

// bruteBest is the reference: exact best cosine over vecs (unit vectors).
func bruteBest(vecs [][]float32, q []float32) (best int, sim float32) {
	best, sim = -1, float32(math.Inf(-1))
	u := unitize(append([]float32(nil), q...))
	for i, v := range vecs {
		var s float64
		for j := range u {
			s += float64(u[j]) * float64(v[j])
		}
		if float32(s) > sim {
			best, sim = i, float32(s)
		}
	}
	return best, sim
}
