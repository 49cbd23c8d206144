package llmrouter

import (
	"strings"
	"testing"
)

func TestKeyFingerprint(t *testing.T) {
	cases := []struct{ key, want string }{
		{"", "(none)"},
		{"x", "…"},
		{"abc", "…"},
		{"sk-", "sk-…"},
		{"sk-short", "sk-…"},
		{"sk-12345678", "sk-…"}, // 11 characters: too short to show any
		{"sk-123456789", "sk-…6789"},
		{"sk-proj-abcdefghijklmnopqrstuvwxyz0123WXYZ", "sk-…WXYZ"},
		{"abcdefghijk", "…"},
		{"abcdefghijkl", "…ijkl"},
		{"AIzaSyD-long-google-style-key-9f3k", "…9f3k"},
		{"Sk-UPPERCASE-prefix-key-1234", "…1234"}, // the prefix is case-sensitive
		{"sk-ant-api03-" + strings.Repeat("A", 80) + "tail", "sk-…tail"},
	}
	for _, tc := range cases {
		if got := keyFingerprint(tc.key); got != tc.want {
			t.Errorf("keyFingerprint(%q) = %q, want %q", tc.key, got, tc.want)
		}
	}
}

// TestKeyFingerprintRevealsLittle: besides the "sk-" prefix, a fingerprint
// shows at most the key's last four characters, and never a key that is
// shorter than twelve.
func TestKeyFingerprintRevealsLittle(t *testing.T) {
	keys := []string{"", "s", "sk", "sk-", "sk-a", "secret", "sk-secret", "sk-secret-key-0001", "plain-secret-key-0001",
		"0123456789ab", "0123456789abc", strings.Repeat("k", 200), "sk-éééééééé✓✓✓✓", " sk-with-space-key "}
	for _, key := range keys {
		fp := keyFingerprint(key)
		shown := strings.TrimPrefix(fp, "sk-")
		if strings.HasPrefix(fp, "sk-") && !strings.HasPrefix(key, "sk-") {
			t.Errorf("keyFingerprint(%q) = %q claims an sk- prefix", key, fp)
		}
		shown = strings.TrimPrefix(shown, "…")
		if shown == "(none)" {
			if key != "" {
				t.Errorf("keyFingerprint(%q) = %q", key, fp)
			}
			continue
		}
		if len(shown) > 4 || !strings.HasSuffix(key, shown) {
			t.Errorf("keyFingerprint(%q) = %q shows more than the last 4 characters", key, fp)
		}
		if len(key) < 12 && shown != "" {
			t.Errorf("keyFingerprint(%q) = %q shows part of a short key", key, fp)
		}
		if !strings.HasPrefix("sk-", key) && strings.Contains(fp, key) {
			t.Errorf("keyFingerprint(%q) = %q contains the key", key, fp)
		}
	}
}

// TestScrubberBytes: every provider secret in what a provider wrote gives
// way to its fingerprint, and an event with none (nearly all of a stream's)
// is returned as it is, without an allocation, however long the keys.
func TestScrubberBytes(t *testing.T) {
	long := "sk-proj-" + strings.Repeat("abcdefghij", 15) + "WXYZ"
	s := newScrubber(map[string]*provider{
		"a": {secrets: []secret{{long, keyFingerprint(long)}}},
		"b": {secrets: []secret{{"sk-short-key-0001", keyFingerprint("sk-short-key-0001")}, {long, keyFingerprint(long)}}},
	})
	in := []byte(`data: {"error":{"message":"bad key ` + long + ` (and sk-short-key-0001)"}}`)
	want := `data: {"error":{"message":"bad key sk-…WXYZ (and sk-…0001)"}}`
	if got := string(s.bytes(in)); got != want {
		t.Errorf("scrubbed %q, want %q", got, want)
	}
	clean := []byte(`data: {"choices":[{"index":0,"delta":{"content":" shoes"}}]}`)
	if n := testing.AllocsPerRun(100, func() { s.bytes(clean) }); n != 0 {
		t.Errorf("an event without secrets: %v allocations", n)
	}
	if got := string(s.bytes(clean)); got != string(clean) {
		t.Errorf("an event without secrets became %q", got)
	}
}
