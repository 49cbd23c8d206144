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
