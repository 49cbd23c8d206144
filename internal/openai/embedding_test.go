package openai

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// TestEmbeddingVector: the numbers and the base64 form of one vector read
// the same; anything else is an error.
func TestEmbeddingVector(t *testing.T) {
	want := []float32{0.5, -0.25, 1e-3, 0}
	raw := make([]byte, 0, 16)
	for _, f := range want {
		raw = binary.LittleEndian.AppendUint32(raw, math.Float32bits(f))
	}
	b64 := base64.StdEncoding.EncodeToString(raw)
	for _, answer := range []string{
		`{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.5,-0.25,0.001,0]}],"model":"m","usage":{"prompt_tokens":1,"total_tokens":1}}`,
		`{"data":[{"embedding":"` + b64 + `","index":0}],"object":"list"}`,
		` {"data" : [ {"embedding" : [ 5e-1 , -0.25 , 1E-3 , 0.0 ] } ] } `,
	} {
		got, err := EmbeddingVector([]byte(answer))
		if err != nil || !slices.Equal(got, want) {
			t.Errorf("%s: %v %v, want %v", answer, got, err, want)
		}
	}
	for _, answer := range []string{
		``, `[]`, `{"data":[]}`, `{"data":{}}`,
		`{"data":[{"embedding":[1]},{"embedding":[2]}]}`, // two inputs
		`{"data":[{"embedding":[]}]}`,
		`{"data":[{"embedding":["1"]}]}`,
		`{"data":[{"embedding":"AAA"}]}`,    // not whole float32s
		`{"data":[{"embedding":"!!!!"}]}`,   // not base64
		`{"data":[{"embedding":[1e999]}]}`,  // not finite as a float32
		`{"data":[{"embedding":[0.1,0.2]}]`, // cut short
		`{"data":[{"embedding":null}]}`,
		`{"data":[{"index":9223372036854775808,"embedding":"AACAPw=="}]}`, // an index past int64 (wrapped, it indexed before the start)
		`{"data":[{"index":18446744073709551616,"embedding":"AACAPw=="}]}`,
	} {
		if got, err := EmbeddingVector([]byte(answer)); err == nil {
			t.Errorf("%s: read %v, want an error", answer, got)
		}
	}
}

// BenchmarkEmbeddingVector reads a 1024-dimension answer in both forms.
func BenchmarkEmbeddingVector(b *testing.B) {
	v := make([]float32, 1024)
	raw := make([]byte, 0, 4096)
	for i := range v {
		v[i] = float32(rand.NormFloat64() / 32)
		raw = binary.LittleEndian.AppendUint32(raw, math.Float32bits(v[i]))
	}
	numbers, _ := json.Marshal(map[string]any{"object": "list", "data": []any{map[string]any{"object": "embedding", "index": 0, "embedding": v}}})
	b64, _ := json.Marshal(map[string]any{"object": "list", "data": []any{map[string]any{"object": "embedding", "index": 0, "embedding": base64.StdEncoding.EncodeToString(raw)}}})
	for name, answer := range map[string][]byte{"numbers": numbers, "base64": b64} {
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(len(answer)))
			for b.Loop() {
				if _, err := EmbeddingVector(answer); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
