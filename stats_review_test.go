package llmrouter

import (
	"testing"

	"github.com/llmrouter/caddy-llm-router/internal/mockllm"
)

// embedFallbackRouter is semanticRouter whose embedding model fails over
// to the same upstream model at the backup provider, labelled by client.
const embedFallbackRouter = defaultRouter + `
	client_label {http.request.header.X-Team}
	model embed-words {
		kind embedding
		price 0.02
		fallback embed-backup
	}
	model embed-backup {
		kind embedding
		provider backup
		upstream embed-words
		price 0.02
	}
	cache {
		semantic {
			model embed-words
			threshold 0.9
		}
	}
`

// clientAnswers is the stats' answers of a client label (0 without any).
func clientAnswers(t *testing.T, client string) int64 {
	t.Helper()
	for _, c := range fetchStats(t).Clients {
		if c.Client == client {
			return c.Answers
		}
	}
	return 0
}

// TestClientAnswersOnePerRequest: a client request is one answer in the
// stats' clients section, however many attempts were charged on the way:
// the semantic lookup's embedding, and a failed attempt the provider
// billed before the failover.
func TestClientAnswersOnePerRequest(t *testing.T) {
	g := newGatewayWith(t, globalOptions, cacheLogSite, embedFallbackRouter)
	g.primary.Set("embed-words", mockllm.Behavior{WordVectors: 256})
	// a 200 that is not an answer: charged as estimated, then failed over
	g.primary.Set("deepseek-chat", mockllm.Behavior{Malformed: true})
	done := requestsDone(t)
	const team = "stats-review-answers"
	before := clientAnswers(t, team)
	resp, body := g.ask("Where is my parcel today?", "", "Authorization", clientKey, "X-Team", team)
	expectModel(t, resp, body, "gemini-2.5-flash", "primary", 2)
	waitFor(t, done, "the request to be counted")
	if got := clientAnswers(t, team) - before; got != 1 {
		t.Errorf("one client request counted as %d answers", got)
	}
}
