package llmrouter

import (
	"fmt"
	"io"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/llmrouter/caddy-llm-router/internal/openai"
)

// adversarialShapes build request bodies of about n bytes that stress one
// part of the reading each: hostile clients send them to make the gateway
// spend CPU or memory out of proportion to the bytes they send.
var adversarialShapes = []struct {
	name string
	make func(n int) []byte
}{
	// many one-line system messages: a system prompt joined from 80,000
	// parts (the body that once cost 41 s of CPU at 4 MB)
	{"system_messages", func(n int) []byte {
		return repeatBody(`{"messages":[`, `{"role":"system","content":"Be kind."},`, `{"role":"user","content":"hi"}]}`, n)
	}},
	{"tiny_messages", func(n int) []byte {
		return repeatBody(`{"messages":[`, `{"role":"user","content":"a"},`, `{"role":"user","content":"b"}]}`, n)
	}},
	{"huge_string", func(n int) []byte {
		return repeatBody(`{"messages":[{"role":"user","content":"`, `where is my order `, `"}]}`, n)
	}},
	{"dense_escapes", func(n int) []byte {
		return repeatBody(`{"messages":[{"role":"system","content":"`, `\u00e9\"\\\n\ud83d\ude00`, `"},{"role":"user","content":"x"}]}`, n)
	}},
	// nesting at the limit, repeated: each tool's schema 100 levels deep
	{"deep_nesting", func(n int) []byte {
		deep := strings.Repeat(`{"a":[`, 50) + "1" + strings.Repeat(`]}`, 50)
		return repeatBody(`{"messages":[{"role":"user","content":"x"}],"tools":[`, `{"type":"function","function":{"name":"f","parameters":`+deep+`}},`, `{"type":"function"}]}`, n)
	}},
	{"many_tools", func(n int) []byte {
		return repeatBody(`{"messages":[{"role":"user","content":"x"}],"tools":[`, `{"type":"function","function":{"name":"track","parameters":{"type":"object","properties":{"id":{"type":"string"}}}}},`, `{"type":"function"}]}`, n)
	}},
	{"many_parts", func(n int) []byte {
		return repeatBody(`{"messages":[{"role":"user","content":[`, `{"type":"text","text":"compare"},{"type":"image_url","image_url":{"url":"data:image/png;base64,iVBORw0KGgo="}},`, `{"type":"text","text":"x"}]}]}`, n)
	}},
	// distinct top-level members: the case-insensitive duplicate check
	{"many_members", func(n int) []byte {
		var b strings.Builder
		b.WriteString(`{"messages":[{"role":"user","content":"x"}]`)
		for i := 0; b.Len() < n-2; i++ {
			fmt.Fprintf(&b, `,"x%d":%d`, i, i)
		}
		b.WriteString("}")
		return []byte(b.String())
	}},
	// distinct features billed apart from tokens, each a new entry of
	// Request.Unpriced (a search of the list was quadratic)
	{"hosted_tool_types", func(n int) []byte { return distinctItems(n, `"tools"`, `{"type":"hosted_%d"}`) }},
	{"plugin_ids", func(n int) []byte { return distinctItems(n, `"plugins"`, `{"id":"plugin%d"}`) }},
	{"folded_names_top", func(n int) []byte { return membersNamed(n, true) }},
	{"folded_names_nested", func(n int) []byte { return membersNamed(n, false) }},
	// a file part's file nested in files to the depth limit, its text at
	// the bottom: the ids a file names are read one level down, not the
	// whole nesting again at each level
	{"nested_files", func(n int) []byte {
		const depth = openai.MaxDepth - 8
		return repeatBody(`{"messages":[{"role":"user","content":[{"type":"file","file":`+strings.Repeat(`{"file":`, depth)+`"`,
			"where is my order ", `"`+strings.Repeat("}", depth)+`}]}]}`, n)
	}},
}

// membersNamed is a body whose object (the top level, or metadata)
// holds member names of n bytes in all that share a long non-ASCII prefix
// and come in reverse order: the most work for a sort of names that folds
// them at each comparison.
func membersNamed(n int, top bool) []byte {
	prefix := strings.Repeat("θ", 40)
	var names []string
	for i, size := 0, 0; size < n; i++ {
		name := fmt.Sprintf(`"%s%07d":0`, prefix, i)
		names = append(names, name)
		size += len(name) + 1
	}
	slices.Reverse(names)
	if top {
		return []byte(`{"messages":[{"role":"user","content":"x"}],` + strings.Join(names, ",") + `}`)
	}
	return []byte(`{"messages":[{"role":"user","content":"x"}],"metadata":{` + strings.Join(names, ",") + `}}`)
}

// distinctItems is a body of about n bytes whose member (a quoted name)
// is an array of items made from format and each item's index.
func distinctItems(n int, member, format string) []byte {
	var b strings.Builder
	b.WriteString(`{"messages":[{"role":"user","content":"x"}],` + member + `:[`)
	for i := 0; b.Len() < n-2; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, format, i)
	}
	b.WriteString("]}")
	return []byte(b.String())
}

// repeatBody is head, then unit repeated, then tail: about n bytes.
func repeatBody(head, unit, tail string, n int) []byte {
	k := max(1, (n-len(head)-len(tail))/len(unit))
	return []byte(head + strings.Repeat(unit, k) + tail)
}

// adversarialRules are the example's rules and a CEL rule that reads the
// whole system prompt and last message.
var adversarialRules = append(append([]*RouteRule(nil), exampleRules...), &RouteRule{Route: "complex_reasoning", When: []string{
	`system.contains("refund policy") || last_user.matches("(?i)order [0-9]{6}")`,
}})

// readBodyOnce is every step of the request path that depends on the
// body's bytes: the strict scan, the rules (every variable read), the cache
// key, the input estimate and the upstream body.
func readBodyOnce(tb testing.TB, rs *ruleSet, raw []byte) {
	var body openai.Request
	if err := body.Parse(raw, openai.Chat); err != nil {
		tb.Fatalf("%.60s…: %v", raw, err)
	}
	vars := ruleVars{ep: chatEndpoint, body: &body}
	for _, v := range ruleVariables {
		vars.ResolveName(v.name)
	}
	rs.choose(&vars, nil, nil)
	_ = cacheKey(chatEndpoint, "ns", &body, nil, nil)
	_ = body.InputTokens()
	parts := body.Upstream("deepseek-chat", openai.AskUsage, openai.OutputCap{})
	if _, err := io.Copy(io.Discard, parts.Reader()); err != nil {
		tb.Fatal(err)
	}
}

// BenchmarkAdversarialBodies: time per byte at every size stays within 2×
// of the 1 KB case (BENCHMARKS.md has the table).
func BenchmarkAdversarialBodies(b *testing.B) {
	rs, err := compileRules(adversarialRules)
	if err != nil {
		b.Fatal(err)
	}
	for _, shape := range adversarialShapes {
		for _, size := range []int{1 << 10, 64 << 10, 1 << 20, 8 << 20} {
			raw := shape.make(size)
			b.Run(fmt.Sprintf("%s/%s", shape.name, sizeName(size)), func(b *testing.B) {
				b.SetBytes(int64(len(raw)))
				b.ReportAllocs()
				for b.Loop() {
					readBodyOnce(b, rs, raw)
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(len(raw)), "ns/byte")
			})
		}
	}
}

// BenchmarkSystemMessages80k is the review's body: 4 MB of 80,000 one-line
// system messages and no model, with the rules on.
func BenchmarkSystemMessages80k(b *testing.B) {
	rs, err := compileRules(adversarialRules)
	if err != nil {
		b.Fatal(err)
	}
	raw := []byte(`{"messages":[` + strings.Repeat(`{"role":"system","content":"You are the assistant of the shop, line."},`, 80000) + `{"role":"user","content":"hi"}]}`)
	b.SetBytes(int64(len(raw)))
	for b.Loop() {
		readBodyOnce(b, rs, raw)
	}
}

func sizeName(n int) string {
	if n >= 1<<20 {
		return fmt.Sprintf("%dMB", n>>20)
	}
	return fmt.Sprintf("%dKB", n>>10)
}

// TestAdversarialBodiesLinearMemory: what reading a body allocates grows
// linearly with it, for every shape (a quadratic join, as the system
// prompt once was, allocates the square). Memory, unlike time, is counted
// exactly, so this is a test rather than a benchmark.
func TestAdversarialBodiesLinearMemory(t *testing.T) {
	rs, err := compileRules(adversarialRules)
	if err != nil {
		t.Fatal(err)
	}
	perByte := func(raw []byte) float64 {
		readBodyOnce(t, rs, raw) // warm pools and caches
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		readBodyOnce(t, rs, raw)
		runtime.ReadMemStats(&after)
		return float64(after.TotalAlloc-before.TotalAlloc) / float64(len(raw))
	}
	// both sizes above what the pools keep (64 KB), so that both
	// allocate afresh
	for _, shape := range adversarialShapes {
		small, large := shape.make(512<<10), shape.make(4<<20)
		ps, pl := perByte(small), perByte(large)
		t.Logf("%s: %.2f bytes allocated a byte at 512 KB, %.2f at 4 MB", shape.name, ps, pl)
		if pl > 2*ps+1 {
			t.Errorf("%s: %.2f bytes allocated a body byte at 4 MB, %.2f at 512 KB: not linear", shape.name, pl, ps)
		}
	}
}
