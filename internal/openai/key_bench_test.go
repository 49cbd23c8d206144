package openai

import "testing"

// BenchmarkKey is the exact cache's key of bench/run.sh's JSON body: the
// canonical pass and its hashes.
func BenchmarkKey(b *testing.B) {
	body := []byte(`{"model":"auto","messages":[{"role":"system","content":"You are a support agent."},{"role":"user","content":"[123-1-77] You are a helpful assistant. Summarise the shipping policy for an order placed on Monday with express delivery to Lyon."}],"max_tokens":64}`)
	var r Request
	if err := r.Parse(body, Chat); err != nil {
		b.Fatal(err)
	}
	head := func(out []byte) []byte { return append(out, "cUUUUUUUUsimple_qa"...) }
	b.Run("key", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			r.Key(head)
		}
	})
	b.Run("parse", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var r Request
			if err := r.Parse(body, Chat); err != nil {
				b.Fatal(err)
			}
		}
	})
}
