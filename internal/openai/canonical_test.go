package openai

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

// bodyKey is the key of a body the request rules accept (without an API's
// required members), with an empty head.
func bodyKey(t testing.TB, body string) [sha256.Size]byte {
	t.Helper()
	var r Request
	if err := r.Parse([]byte(body), 0); err != nil {
		t.Fatalf("%s: %v", body, err)
	}
	return r.Key(func(b []byte) []byte { return b })
}

func TestKeyCanonical(t *testing.T) {
	key := func(body string) [sha256.Size]byte { t.Helper(); return bodyKey(t, body) }
	base := key(`{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":0}`)
	same := []string{
		`{ "temperature" : 0 , "messages" : [ { "role" : "user" , "content" : "hi" } ] , "model" : "m" }`,
		`{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":0,"user":"u1"}`,
		`{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":0,"stream":true,"stream_options":{"include_usage":true}}`,
		`{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":0,"stream":false,"stream_options":null,"user":null}`,
		`{"mod\u0065l":"m","messages":[{"role":"user","content":"hi"}],"temperature":0}`,
		"\n{\"model\":\"m\",\r\n\t\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"temperature\":0}\n",
	}
	for _, b := range same {
		if key(b) != base {
			t.Errorf("%s: another key than the same question", b)
		}
	}
	other := []string{
		`{"model":"m","messages":[{"role":"user","content":"hi!"}],"temperature":0}`,
		`{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":0.0}`,
		`{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":0,"metadata":{"user":"u1"}}`,
		`{"model":"m","messages":[{"role":"user","content":"hi"},{"role":"user","content":""}],"temperature":0}`,
		`{"model":"m","messages":[{"role":"system","content":"hi"}],"temperature":0}`,
		`{"model":"m2","messages":[{"role":"user","content":"hi"}],"temperature":0}`,
		`{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":0,"n":2}`,
		`{"model":"m","messages":[{"role":"user","content":"hi"}]}`,
	}
	seen := map[[sha256.Size]byte]string{base: "base"}
	for _, b := range other {
		k := key(b)
		if prev, dup := seen[k]; dup {
			t.Errorf("%s: same key as %s", b, prev)
		}
		seen[k] = b
	}
	// nested objects keep their order: a provider may follow it (a JSON
	// schema's properties are generated in the order written)
	if key(`{"t":{"x":1,"y":[{"p":1,"q":{"r":2,"s":3}}]}}`) == key(`{"t":{"y":[{"q":{"s":3,"r":2},"p":1}],"x":1}}`) {
		t.Error("nested members in another order share a key")
	}
	schema := func(props string) [sha256.Size]byte {
		return key(`{"model":"m","messages":[{"role":"user","content":"hi"}],"response_format":{"type":"json_schema","json_schema":{"name":"a","schema":{"type":"object","properties":{` + props + `}}}}}`)
	}
	if schema(`"reasoning":{"type":"string"},"answer":{"type":"string"}`) == schema(`"answer":{"type":"string"},"reasoning":{"type":"string"}`) {
		t.Error("a JSON schema's properties in another order share a key: the answer's fields come in their order")
	}
	// only the top level's user, stream and stream_options are left out
	if key(`{"t":{"user":1}}`) == key(`{"t":{}}`) || key(`{"t":{"stream":true}}`) == key(`{"t":{}}`) {
		t.Error("a nested user or stream is left out")
	}
	// objects small and large (two ways of sorting members)
	var fwd, rev []string
	for i := range 14 {
		fwd = append(fwd, fmt.Sprintf(`"k%02d":%d`, i, i))
		rev = append([]string{fwd[i]}, rev...)
	}
	for _, n := range []int{3, 12, 13, 14} {
		if key("{"+strings.Join(fwd[:n], ",")+"}") != key("{"+strings.Join(rev[14-n:], ",")+"}") {
			t.Errorf("%d members: their order changes the key", n)
		}
		nested := func(ms []string) string { return `{"o":{` + strings.Join(ms, ",") + `}}` }
		if n > 1 && key(nested(fwd[:n])) == key(nested(rev[14-n:])) {
			t.Errorf("%d nested members in another order share a key", n)
		}
	}
	// the encoding has no ambiguous boundaries
	if key(`{"a":["ab"]}`) == key(`{"a":["a","b"]}`) || key(`{"a":{"b":1}}`) == key(`{"a":{"b1":""}}`) ||
		key(`{"ab":1}`) == key(`{"a":1,"b":1}`) || key(`{"a":{}}`) == key(`{"a":"{}"}`) ||
		key(`{"a":[]}`) == key(`{"a":{}}`) || key(`{"a":[[1],[2]]}`) == key(`{"a":[[1,2]]}`) ||
		key(`{"a":"1"}`) == key(`{"a":1}`) || key(`{"a":[{}]}`) == key(`{"a":[]}`) || key(`{}`) == key(`{"":""}`) {
		t.Error("two different values hash alike")
	}
}

// TestKeyHead: what the caller writes first is part of the key.
func TestKeyHead(t *testing.T) {
	var r Request
	if err := r.Parse([]byte(`{"a":1}`), 0); err != nil {
		t.Fatal(err)
	}
	head := func(tag byte, v string) func([]byte) []byte {
		return func(b []byte) []byte { return AppendString(b, tag, v) }
	}
	k := r.Key(head('s', "ns"))
	if k != r.Key(head('s', "ns")) {
		t.Error("the same head and body, another key")
	}
	if k == r.Key(head('s', "ns2")) || k == r.Key(head('k', "ns")) || k == r.Key(func(b []byte) []byte { return b }) {
		t.Error("the head is not part of the key")
	}
	// the head's encoding is self-delimiting
	two := func(a, b string) [sha256.Size]byte {
		return r.Key(func(out []byte) []byte { return AppendString(AppendString(out, 's', a), 's', b) })
	}
	if two("ab", "c") == two("a", "bc") {
		t.Error("head strings run into each other")
	}
	if got := AppendLen(nil, 'a', 300); !bytes.Equal(got, []byte{'a', 0xac, 0x02}) {
		t.Errorf("AppendLen = %x", got)
	}
	if got := AppendString([]byte("x"), 'k', []byte("ab")); string(got) != "xk\x02ab" {
		t.Errorf("AppendString = %q", got)
	}
	// no text of the body is in what Key returns
	if k := bodyKey(t, `{"messages":[{"content":"secret question"}]}`); bytes.Contains(k[:], []byte("secret")) {
		t.Error("the key holds prompt text")
	}
}

// TestKeyNestedDuplicates: a nested object may name a member twice (the
// request rules check only the top level); bodies that a parser reads
// differently, because the last or first of the two wins, get different
// keys.
func TestKeyNestedDuplicates(t *testing.T) {
	if bodyKey(t, `{"o":{"b":1,"b":2}}`) == bodyKey(t, `{"o":{"b":2,"b":1}}`) {
		t.Error("the order of a duplicate member is not in the key")
	}
	if bodyKey(t, `{"o":{"b":1,"b":2}}`) == bodyKey(t, `{"o":{"b":2}}`) {
		t.Error("a duplicate member is not in the key")
	}
}

// TestKeyNestedDuplicatesLarge: the same for an object of more than 12
// members, which are sorted with an unstable sort.
func TestKeyNestedDuplicatesLarge(t *testing.T) {
	// Python's json and encoding/json read o.b as 1 in a and 2 in b
	a := `{"o":{"k01":0,"b":2,"k09":0,"k02":0,"k11":0,"k00":0,"k08":0,"b":1,"k05":0,"k07":0,"k10":0,"k04":0,"k03":0,"k12":0,"k06":0}}`
	b := `{"o":{"k09":0,"k03":0,"k06":0,"k02":0,"k12":0,"k04":0,"k08":0,"k00":0,"k07":0,"k10":0,"k01":0,"b":1,"k11":0,"b":2,"k05":0}}`
	if bodyKey(t, a) == bodyKey(t, b) {
		t.Error("two bodies whose duplicate nested member a parser reads differently share a key")
	}
}

// TestKeyNestedCaseVariants: members that encoding/json takes for one
// ("Name" and "name") keep their order in the key: it decides which one a
// Go provider reads.
func TestKeyNestedCaseVariants(t *testing.T) {
	for _, n := range []int{0, 12} {
		pad := ""
		for i := range n {
			pad += fmt.Sprintf(`"p%02d":0,`, i)
		}
		a := `{"messages":[{` + pad + `"role":"user","content":"hi","Name":"a","name":"b"}]}`
		b := `{"messages":[{` + pad + `"role":"user","content":"hi","name":"b","Name":"a"}]}`
		if bodyKey(t, a) == bodyKey(t, b) {
			t.Errorf("%d members: case variants in another order share a key", n+4)
		}
	}
}

// FuzzCacheKey: any body the router accepts has a key, and white space
// between tokens never changes it.
func FuzzCacheKey(f *testing.F) {
	f.Add(`{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":0}`)
	f.Add(`{"a":{"b":[1,{"c":null,"d":true}],"e":"\u00e9"},"stream":false}`)
	f.Add(`{"user":{"x":1},"z":[[],[{}]]}`)
	f.Add(`{"o":{"k0":0,"k1":1,"k2":2,"k3":3,"k4":4,"k5":5,"k6":6,"k7":7,"k8":8,"k9":9,"ka":10,"kb":11,"kc":12}}`)
	f.Fuzz(func(t *testing.T, body string) {
		var r Request
		if err := r.Parse([]byte(body), 0); err != nil {
			return
		}
		head := func(b []byte) []byte { return AppendString(b, 's', "ns") }
		k := r.Key(head)
		if r.Key(head) != k {
			t.Fatalf("the key of %q changes from call to call", body)
		}
		var compact, indented bytes.Buffer
		if err := json.Compact(&compact, []byte(body)); err != nil {
			t.Fatalf("accepted but not JSON: %v", err)
		}
		if err := json.Indent(&indented, []byte(body), " ", "\t"); err != nil {
			t.Fatal(err)
		}
		for _, form := range [][]byte{compact.Bytes(), indented.Bytes()} {
			var r2 Request
			if err := r2.Parse(form, 0); err != nil {
				t.Fatalf("%q accepted, but %q refused: %v", body, form, err)
			}
			if r2.Key(head) != k {
				t.Errorf("white space changes the key of %q", body)
			}
		}
	})
}

// FuzzSkipScalar: the canonicalizer's fast skip of a valid scalar ends
// where the validating scanner does.
func FuzzSkipScalar(f *testing.F) {
	for _, v := range []string{`"a\"b"`, `"\\\\"`, `"x\\\"y\\"`, `-1.5e3`, `true`, `null`, `"Sản phẩm"`, `"\u0022"`} {
		f.Add(v)
	}
	f.Fuzz(func(t *testing.T, v string) {
		if v == "" || v[0] == '{' || v[0] == '[' {
			return
		}
		b := []byte(v + `,"next"]`)
		want := scanner{b: b}
		if want.value(1) != nil || want.i != len(v) {
			return // not one valid scalar
		}
		got := scanner{b: b}
		skipScalar(&got)
		if got.i != want.i {
			t.Errorf("%q: skipped to %d, the scanner to %d", v, got.i, want.i)
		}
	})
}

// TestSkipValue: the canonicalizer's skip of a valid value ends where the
// validating scanner does.
func TestSkipValue(t *testing.T) {
	for _, v := range []string{`{}`, `[]`, `{"a":"}]\"","b":[1,{"c":"]"}]}`, `[[["\\"]]]`, `"x"`, `12`, `null`, `{"a" : [ 1 , 2 ] }`} {
		b := []byte(v + `,"next"]`)
		want := scanner{b: b}
		if err := want.value(1); err != nil || want.i != len(v) {
			t.Fatalf("%s: %v at %d", v, err, want.i)
		}
		got := scanner{b: b}
		skipValue(&got)
		if got.i != want.i {
			t.Errorf("%s: skipped to %d, the scanner to %d", v, got.i, want.i)
		}
	}
}

// TestQuestionKey: bodies that differ only in the last user message's text
// share a question key; any other difference, a last message that is not
// the user's, or a part that is not text, does not.
func TestQuestionKey(t *testing.T) {
	key := func(body string) ([32]byte, bool) {
		var r Request
		if err := r.Parse([]byte(body), Chat); err != nil {
			t.Fatalf("%s: %v", body, err)
		}
		return r.QuestionKey(func(b []byte) []byte { return append(b, 'q') })
	}
	base, ok := key(`{"model":"m","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"where is my order?"}]}`)
	if !ok {
		t.Fatal("a plain question has no question key")
	}
	same := []string{
		`{"model":"m","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"has my parcel shipped?"}]}`,
		`{"messages":[{"role":"system","content":"be brief"},{"role":"user","content":[{"type":"text","text":"parcel?"}]}],"model":"m","stream":true}`,
	}
	for _, b := range same {
		if k, ok := key(b); !ok || k != base {
			t.Errorf("%s: another namespace (ok %v)", b, ok)
		}
	}
	other := []string{
		`{"model":"m","messages":[{"role":"system","content":"be long"},{"role":"user","content":"where is my order?"}]}`,
		`{"model":"m2","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"where is my order?"}]}`,
		`{"model":"m","temperature":0,"messages":[{"role":"system","content":"be brief"},{"role":"user","content":"where is my order?"}]}`,
		`{"model":"m","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"hi"},{"role":"assistant","content":"hello"},{"role":"user","content":"where is my order?"}]}`,
	}
	for _, b := range other {
		if k, ok := key(b); ok && k == base {
			t.Errorf("%s: shares the namespace", b)
		}
	}
	for _, b := range []string{
		`{"model":"m","messages":[{"role":"user","content":"where is my order?"},{"role":"assistant","content":"here"}]}`,
		`{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"what is this?"},{"type":"image_url","image_url":{"url":"https://x/y.png"}}]}]}`,
		`{"model":"m","messages":[{"role":"user","content":null}]}`,
	} {
		if _, ok := key(b); ok {
			t.Errorf("%s: has a question key", b)
		}
	}
}

// TestKeyInlineAndHashedValues: member values small enough to be copied
// into their object's encoding and values large enough to be hashed both
// keep the key canonical (the top level's member order, white space) and
// distinct (any change, at any depth, on either side of inlineValue).
func TestKeyInlineAndHashedValues(t *testing.T) {
	key := func(body string) [sha256.Size]byte { t.Helper(); return bodyKey(t, body) }
	seen := map[[sha256.Size]byte]string{}
	distinct := func(body string) {
		t.Helper()
		k := key(body)
		if prev, dup := seen[k]; dup {
			t.Errorf("%.80s…: same key as %.80s…", body, prev)
		}
		seen[k] = body
	}
	for _, n := range []int{0, 1, inlineValue/2 - 20, inlineValue - 40, inlineValue - 20, inlineValue, inlineValue + 20, 4 * inlineValue} {
		text := strings.Repeat("x", n)
		a := fmt.Sprintf(`{"m":[{"role":"user","content":%q}],"o":{"p":{"q":%q,"r":1}}}`, text, text)
		b := fmt.Sprintf(`{ "o" : { "p" : { "q" : %q , "r" : 1 } } , "m" : [ { "role" : "user" , "content" : %q } ] }`, text, text)
		if key(a) != key(b) {
			t.Errorf("%d-byte values: the top level's member order or white space changes the key", n)
		}
		if c := fmt.Sprintf(`{"m":[{"role":"user","content":%q}],"o":{"p":{"r":1,"q":%q}}}`, text, text); key(a) == key(c) {
			t.Errorf("%d-byte values: nested members in another order share a key", n)
		}
		distinct(a)
		// one byte changed deep inside, on each side
		distinct(strings.Replace(a, `"r":1`, `"r":2`, 1))
		distinct(fmt.Sprintf(`{"m":[{"role":"user","content":%q}],"o":{"p":{"q":%q,"r":1}}}`, text+"y", text))
		if n == 0 {
			continue
		}
		// the same bytes, moved from one member into another
		distinct(fmt.Sprintf(`{"m":[{"role":"user","content":%q}],"o":{"p":{"q":%q,"r":1}}}`, text, ""))
		distinct(fmt.Sprintf(`{"m":[{"role":"user","content":%q}],"o":{"p":{"q":%q,"r":1}}}`, "", text))
	}
}
