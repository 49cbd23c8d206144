package llmrouter

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
)

func TestRoutingRules(t *testing.T) {
	g := newGateway(t, defaultRouter)
	cases := []struct {
		name             string
		model            string
		header           []string
		wantModel        string
		wantProvider     string
		wantRoute        string
		wantUpstreamSeen string
	}{
		{"route header", "gpt-4.1", []string{"X-LLM-Route", "simple_qa"}, "deepseek-v3.2", "primary", "simple_qa", "deepseek-chat"},
		{"query type header", "", []string{"X-Query-Type", "complex_reasoning"}, "gpt-4.1", "primary", "complex_reasoning", "gpt-4.1"},
		{"model names a route", "complex_reasoning", nil, "gpt-4.1", "primary", "complex_reasoning", "gpt-4.1"},
		{"model names a model", "claude-sonnet-4.5", nil, "claude-sonnet-4.5", "backup", "", "claude-sonnet-4.5"},
		{"model with upstream id", "deepseek-v3.2", nil, "deepseek-v3.2", "primary", "", "deepseek-chat"},
		{"no model: default route", "", nil, "deepseek-v3.2", "primary", "simple_qa", "deepseek-chat"},
		{"auto: default route", "auto", nil, "deepseek-v3.2", "primary", "simple_qa", "deepseek-chat"},
	}
	for _, stream := range []bool{false, true} {
		for _, tc := range cases {
			name := tc.name
			if stream {
				name += " stream"
			}
			t.Run(name, func(t *testing.T) {
				g.primary.Reset()
				g.backup.Reset()
				resp, body := g.post(chatBody(tc.model, stream), tc.header...)
				expectModel(t, resp, body, tc.wantModel, tc.wantProvider, 1)
				if got := resp.Header.Get("X-LLM-Route"); got != tc.wantRoute {
					t.Errorf("X-LLM-Route = %q, want %q", got, tc.wantRoute)
				}
				mock := g.primary
				if tc.wantProvider == "backup" {
					mock = g.backup
				}
				reqs := mock.Requests()
				if len(reqs) != 1 || reqs[0].Model != tc.wantUpstreamSeen {
					t.Fatalf("upstream saw %+v, want one request for %q", reqs, tc.wantUpstreamSeen)
				}
				if stream {
					if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
						t.Errorf("Content-Type = %q", ct)
					}
					data := sseData(body)
					if len(data) == 0 || data[len(data)-1] != "[DONE]" {
						t.Errorf("stream does not end with [DONE]: %q", body)
					}
				} else if !strings.Contains(body, `"object":"chat.completion"`) {
					t.Errorf("body is not a chat completion: %s", body)
				}
			})
		}
	}

	t.Run("unknown model", func(t *testing.T) {
		resp, body := g.post(chatBody("gpt-9", false))
		if resp.StatusCode != http.StatusNotFound {
			t.Fatalf("status %d, want 404", resp.StatusCode)
		}
		if e := apiErr(t, body); e.Code != "model_not_found" || e.Type != "invalid_request_error" || !strings.Contains(e.Message, "gpt-9") {
			t.Errorf("error = %+v", e)
		}
	})
	t.Run("unknown route header", func(t *testing.T) {
		resp, body := g.post(chatBody("gpt-4.1", false), "X-LLM-Route", "poetry")
		if resp.StatusCode != http.StatusNotFound || apiErr(t, body).Code != "model_not_found" {
			t.Fatalf("status %d body %s", resp.StatusCode, body)
		}
	})
	t.Run("model fallback", func(t *testing.T) {
		g.primary.Reset()
		g.primary.Set("gpt-4.1", mockBehaviorStatus(500))
		resp, body := g.post(chatBody("gpt-4.1", false))
		expectModel(t, resp, body, "claude-sonnet-4.5", "backup", 2)
	})
	t.Run("models list", func(t *testing.T) {
		g.primary.Reset()
		g.backup.Reset()
		resp, err := g.tc.Client.Get(gatewayURL + "/v1/models")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var list struct {
			Object string `json:"object"`
			Data   []struct {
				ID string `json:"id"`
			} `json:"data"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&list); err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, d := range list.Data {
			ids = append(ids, d.ID)
		}
		want := "deepseek-v3.2 gemini-2.5-flash gpt-4.1 claude-sonnet-4.5 complex_reasoning simple_qa"
		if list.Object != "list" || strings.Join(ids, " ") != want {
			t.Errorf("models = %q %v, want %s", list.Object, ids, want)
		}
		if len(g.primary.Requests())+len(g.backup.Requests()) != 0 {
			t.Error("GET /models went upstream")
		}
	})
	t.Run("other paths under the matcher get unknown_url", func(t *testing.T) {
		resp, err := g.tc.Client.Get(gatewayURL + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound || apiErr(t, string(b)).Code != "unknown_url" || len(g.primary.Requests()) != 0 {
			t.Errorf("GET /healthz: %d %s", resp.StatusCode, b)
		}
	})
}

// TestRoutingByPriority covers rule 4 without a default route: every
// deployment, by priority.
func TestRoutingByPriority(t *testing.T) {
	g := newGateway(t, `
	provider primary {
		base_url {PRIMARY}/v1
	}
	provider backup {
		base_url {BACKUP}/v1
	}
	model cheap {
		priority 2
	}
	model best {
		provider backup
		priority 1
	}
	model best {
		priority 3
	}
`)
	resp, body := g.post(chatBody("", false))
	expectModel(t, resp, body, "best", "backup", 1)
	g.backup.Set("best", mockBehaviorStatus(503))
	resp, body = g.post(chatBody("auto", false))
	expectModel(t, resp, body, "cheap", "primary", 2)
}

// bestOnBoth is a router with the model best at both providers, the
// backup's of the given weight.
func bestOnBoth(weight string) string {
	return `
	provider primary {
		base_url {PRIMARY}/v1
	}
	provider backup {
		base_url {BACKUP}/v1
	}
	model best
	model best {
		provider backup
		weight ` + weight + `
	}
`
}

// TestWeightZero: a deployment of weight 0 is asked only when the others
// of its priority failed (README). The default (weight 1) replaced the 0,
// so it took half the traffic.
func TestWeightZero(t *testing.T) {
	g := newGateway(t, bestOnBoth("0"))
	for range 20 {
		resp, body := g.post(chatBody("best", false))
		expectModel(t, resp, body, "best", "primary", 1)
	}
	g.primary.Set("best", mockBehaviorStatus(503))
	resp, body := g.post(chatBody("best", false))
	expectModel(t, resp, body, "best", "backup", 2)
}

// TestLargeWeight: a weight is a share, however large. weight × health
// score was an int product, which overflowed for a weight of 10^17 and
// came out negative: that deployment was read as weight 0 and asked only
// when the others had failed, the opposite of what the config says.
func TestLargeWeight(t *testing.T) {
	g := newGateway(t, bestOnBoth("100000000000000000"))
	for range 10 {
		resp, body := g.post(chatBody("best", false))
		expectModel(t, resp, body, "best", "backup", 1)
	}
}
