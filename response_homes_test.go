package llmrouter

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/llmrouter/caddy-llm-router/internal/mockllm"
)

// TestResponsesContinuationGoesHome: a Responses API request that
// continues a stored response goes to the deployment that made it, JSON
// or stream; one whose response no deployment has gets the provider's 404
// as the client's own error, with no health change.
func TestResponsesContinuationGoesHome(t *testing.T) {
	g := newGateway(t, defaultRouter)
	// the first answer comes from the fallback, claude@backup
	g.primary.Set("gpt-4.1", mockllm.Behavior{Status: 500, Times: 1})
	resp, body := g.postPath("/v1/responses", `{"model":"complex_reasoning","input":"Which jacket is warmer?"}`)
	expectModel(t, resp, body, "claude-sonnet-4.5", "backup", 2)
	var first struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal([]byte(body), &first); err != nil || first.ID == "" {
		t.Fatalf("no response id in %s", body)
	}
	// gpt-4.1 is healthy again and first in the route, but the response
	// the follow-up continues is at the backup
	follow := `{"model":"complex_reasoning","input":"And the cheaper one?","previous_response_id":"` + first.ID + `"}`
	resp, body = g.postPath("/v1/responses", follow)
	expectModel(t, resp, body, "claude-sonnet-4.5", "backup", 1)

	// a streamed response's id is remembered too
	g.primary.Set("gpt-4.1", mockllm.Behavior{Status: 500, Times: 1})
	resp, body = g.postPath("/v1/responses", `{"model":"complex_reasoning","input":"Is it waterproof?","stream":true}`)
	if resp.Header.Get("X-LLM-Model") != "claude-sonnet-4.5" {
		t.Fatalf("streamed by %s", resp.Header.Get("X-LLM-Model"))
	}
	var streamedID string
	for _, d := range sseData(body) {
		var ev struct {
			Response struct {
				ID string `json:"id"`
			} `json:"response"`
		}
		if json.Unmarshal([]byte(d), &ev) == nil && ev.Response.ID != "" {
			streamedID = ev.Response.ID
			break
		}
	}
	resp, body = g.postPath("/v1/responses", `{"model":"complex_reasoning","input":"Thanks","previous_response_id":"`+streamedID+`"}`)
	expectModel(t, resp, body, "claude-sonnet-4.5", "backup", 1)

	// a response nobody has: the 404 is the client's, relayed at once
	before := statsFor(t, g, "gpt-4.1", "primary").HealthScore
	resp, body = g.postPath("/v1/responses", `{"model":"complex_reasoning","input":"Hi","previous_response_id":"resp_long_gone"}`)
	if resp.StatusCode != http.StatusNotFound || resp.Header.Get("X-LLM-Attempts") != "1" || !strings.Contains(body, "previous_response_not_found") {
		t.Errorf("status %d after %s attempts: %s; want the provider's 404 after 1", resp.StatusCode, resp.Header.Get("X-LLM-Attempts"), body)
	}
	if after := statsFor(t, g, "gpt-4.1", "primary").HealthScore; after != before {
		t.Errorf("gpt-4.1's score went from %d to %d on the client's 404", before, after)
	}
}
