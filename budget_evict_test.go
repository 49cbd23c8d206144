package llmrouter

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/certmagic"
)

// smallKeyBound lowers maxBudgetKeys to n for the test (ledgers made
// after the call).
func smallKeyBound(t *testing.T, n int) {
	old := maxBudgetKeys
	maxBudgetKeys = n
	t.Cleanup(func() { maxBudgetKeys = old })
}

// TestEvictedKeyKeepsItsHolds: a client that controls the budget key
// (a header) holds the hard cap with requests in flight, then sends
// requests under more distinct keys than memory keeps, pushing its own key
// out; the key that comes back still holds what its requests in flight
// reserved, so no more of them are admitted past the cap. Their answers,
// settled while the key is away or after, land on it alone.
func TestEvictedKeyKeepsItsHolds(t *testing.T) {
	for _, stored := range []bool{false, true} {
		t.Run(fmt.Sprint("stored=", stored), func(t *testing.T) {
			smallKeyBound(t, 4)
			var st certmagic.Storage
			if stored {
				st = &certmagic.FileStorage{Path: t.TempDir()}
			}
			b, l := storedBudget(t, &Budget{Name: "evict_holds", Limits: []BudgetLimit{{1, "day"}}, Hard: 1, Key: "{k}"}, st, "test-instance")
			at := time.Now()
			admitN := func(key string, n int) []budgetCharge {
				var cs []budgetCharge
				for range n {
					if res, c, _ := b.admit(key, 0.4, at, false, false); res == admitted {
						cs = append(cs, c)
					}
				}
				return cs
			}
			// three in flight: 1.2 held against a cap of 1
			held := admitN("attacker", 5)
			if len(held) != 3 {
				t.Fatalf("%d admitted at first, want 3", len(held))
			}
			// distinct keys, each admitted and ended at once (a cheap request)
			for i := range 2 * maxBudgetKeys {
				cs := admitN(fmt.Sprint("sybil-", i), 1)
				releaseCharges(cs)
			}
			if again := admitN("attacker", 5); len(again) != 0 {
				t.Errorf("%d more admitted once the key was pushed out of memory, past the hard cap (3 in flight)", len(again))
				releaseCharges(again)
			}
			// the three answers come, with another key pushed out meanwhile
			settleAll := func(cs []budgetCharge, cost float64) {
				for i := range cs {
					c := &cs[i]
					l.settle(b, c.key, cost, at, c.reserved)
					c.reserved = 0
				}
			}
			settleAll(held[:1], 0.3)
			admitN("sybil-x", 1)
			for i := range 2 * maxBudgetKeys {
				releaseCharges(admitN(fmt.Sprint("sybil-y", i), 1))
			}
			settleAll(held[1:], 0.3)
			if got := l.reserved("attacker", periodDay); got != 0 {
				t.Errorf("attacker still reserves %v after every request ended", got)
			}
			if s := l.spend("attacker", at); s[periodDay] < 0.9-1e-9 {
				t.Errorf("attacker spent %v, want 0.9", s[periodDay])
			}
			if s := l.spend("sybil-x", at); s[periodDay] != 0 {
				t.Errorf("sybil-x spent %v of another key's answers", s[periodDay])
			}
			if n := l.keys.Len() + len(l.spilled); n > maxBudgetKeys+1 {
				t.Errorf("%d keys kept with no request in flight but sybil-x's, past the bound", n)
			}
		})
	}
}

// TestEvictedKeyKeepsItsHoldsOverHTTP is TestEvictedKeyKeepsItsHolds as a
// client sends it: a budget keyed by a header the client chooses, its
// requests held at the provider while requests under other values push
// its key out of memory.
func TestEvictedKeyKeepsItsHoldsOverHTTP(t *testing.T) {
	smallKeyBound(t, 4)
	up := newHeldUpstream(10, 100)
	r := heldRouter(t, up, &Budget{Name: "evict_holds_http", Limits: []BudgetLimit{{Amount: 0.3, Period: "day"}}, Hard: 0.3, Key: "{http.request.header.X-User}"})
	as := func(user, body string) func() int {
		return func() int {
			req := httptest.NewRequest(http.MethodPost, "/v1/chat/completions", strings.NewReader(body))
			req.Header.Set("X-User", user)
			req = req.WithContext(context.WithValue(req.Context(), caddy.ReplacerCtxKey, caddyhttp.NewTestReplacer(req)))
			w := httptest.NewRecorder()
			if err := r.ServeHTTP(w, req, nil); err != nil {
				if he, ok := err.(caddyhttp.HandlerError); ok {
					w.Code = he.StatusCode
				}
			}
			return w.Code
		}
	}
	// reservation ≈ 0.105: three fit under the cap of 0.3
	body := `{"model":"simple_qa","max_tokens":100,"messages":[{"role":"user","content":"Hi"}]}`
	a1, codes1 := admitSomeWith(t, up, 4, as("mallory", body))
	if a1 != 3 {
		t.Fatalf("%d of 4 admitted, want 3", a1)
	}
	// keys made by requests the provider refuses at once
	cheap := `{"model":"simple_qa","max_tokens":9007199254740992,"messages":[{"role":"user","content":"Hi"}]}`
	for i := range 2 * maxBudgetKeys {
		as(fmt.Sprint("sybil-", i), cheap)()
	}
	a2, codes2 := admitSomeWith(t, up, 3, as("mallory", body))
	close(up.release)
	waitCodes(codes1, a1)
	waitCodes(codes2, a2)
	if a2 != 0 {
		t.Errorf("%d more admitted once mallory's key was pushed out of memory, beside the 3 in flight: past the hard cap", a2)
	}
}
