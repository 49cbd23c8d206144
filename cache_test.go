package llmrouter

import (
	"bytes"
	"net/http"
	"testing"

	"github.com/llmrouter/caddy-llm-router/internal/openai"
)

// The body's canonical form, the chat conversions and their fuzz targets
// are tested in internal/openai (canonical_test.go, convert_test.go).

// TestCacheKey: the key is the body's canonical form with the endpoint,
// the namespace and the key headers.
func TestCacheKey(t *testing.T) {
	key := func(ep endpoint, ns, body string, h ...string) answerKey {
		t.Helper()
		var r openai.Request
		if err := r.Parse([]byte(body), ep.api()); err != nil {
			t.Fatalf("%s: %v", body, err)
		}
		hdr := http.Header{}
		for i := 0; i+1 < len(h); i += 2 {
			hdr.Add(h[i], h[i+1])
		}
		return cacheKey(ep, ns, &r, hdr, []string{"X-Team", "X-Env"})
	}
	const q = `{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":0}`
	base := key(chatEndpoint, "ns", q)
	// the body's canonical form: spacing, the top level's member order,
	// user and stream do not count
	for _, b := range []string{
		`{ "temperature" : 0 , "messages" : [ { "role" : "user" , "content" : "hi" } ] , "model" : "m" }`,
		`{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":0,"user":"u1","stream":true}`,
	} {
		if key(chatEndpoint, "ns", b) != base {
			t.Errorf("%s: another key than the same question", b)
		}
	}
	if key(chatEndpoint, "ns", `{"model":"m","messages":[{"role":"user","content":"hi!"}],"temperature":0}`) == base {
		t.Error("another question, the same key")
	}
	// the key headers, each value in order, and which header has it
	distinct := map[answerKey]string{base: "none"}
	for _, h := range [][]string{
		{"X-Team", "a"}, {"X-Team", "b"}, {"X-Env", "a"}, {"X-Team", "a", "X-Team", "b"}, {"X-Team", "b", "X-Team", "a"},
		{"X-Team", "a,b"}, {"X-Team", ""}, {"X-Team", "a", "X-Env", "b"}, {"X-Team", "ab"},
	} {
		k := key(chatEndpoint, "ns", q, h...)
		if prev, dup := distinct[k]; dup {
			t.Errorf("headers %q: same key as %s", h, prev)
		}
		distinct[k] = string(bytes.Join(bytesOf(h), []byte("|")))
	}
	if key(chatEndpoint, "ns", q, "X-Team", "a") != key(chatEndpoint, "ns", q, "x-team", "a") {
		t.Error("header names are not canonical")
	}
	if key(chatEndpoint, "ns", q, "X-Other", "a") != base {
		t.Error("a header that is not a key header changes the key")
	}
	// the endpoint and the namespace
	var r openai.Request
	if err := r.Parse([]byte(`{"model":"m","input":"x","prompt":"x","messages":[]}`), 0); err != nil {
		t.Fatal(err)
	}
	keys := map[answerKey]string{}
	for _, ep := range []endpoint{chatEndpoint, completionsEndpoint, responsesEndpoint, embeddingsEndpoint} {
		for _, ns := range []string{"ns", "ns2", ""} {
			k := cacheKey(ep, ns, &r, nil, nil)
			if prev, dup := keys[k]; dup {
				t.Errorf("%s %q: same key as %s", ep, ns, prev)
			}
			keys[k] = ep.String() + " " + ns
		}
	}
	if k := key(chatEndpoint, "ns", `{"messages":[{"role":"user","content":"secret question"}]}`); bytes.Contains(k[:], []byte("secret")) {
		t.Error("the key holds prompt text")
	}
}

func bytesOf(s []string) [][]byte {
	out := make([][]byte, len(s))
	for i, v := range s {
		out[i] = []byte(v)
	}
	return out
}

func TestCacheControlHeader(t *testing.T) {
	for v, want := range map[string][2]bool{
		"": {true, true}, "no-cache": {false, true}, "no-store": {false, false}, "max-age=0, No-Cache": {false, true}, "private": {true, true},
	} {
		h := http.Header{}
		if v != "" {
			h.Set("Cache-Control", v)
		}
		if l, s := cacheControl(h); l != want[0] || s != want[1] {
			t.Errorf("Cache-Control %q: lookup %v store %v, want %v", v, l, s, want)
		}
	}
	// Pragma: no-cache, when there is no Cache-Control
	for _, c := range []struct {
		cc, pragma string
		lookup     bool
	}{{"", "no-cache", false}, {"", "No-Cache, x", false}, {"", "x", true}, {"private", "no-cache", true}, {"no-cache", "", false}} {
		h := http.Header{"Pragma": {c.pragma}}
		if c.cc != "" {
			h.Set("Cache-Control", c.cc)
		}
		if l, s := cacheControl(h); l != c.lookup || !s {
			t.Errorf("Cache-Control %q, Pragma %q: lookup %v store %v, want %v true", c.cc, c.pragma, l, s, c.lookup)
		}
	}
}
