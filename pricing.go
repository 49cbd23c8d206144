package llmrouter

import (
	"errors"

	"github.com/llmrouter/caddy-llm-router/internal/openai"
)

// Price is what a deployment costs per 1M tokens, in price units (list-price
// US dollars unless the provider bills otherwise; see Currency).
type Price struct {
	// Input is the price of 1M prompt tokens.
	Input float64 `json:"input"`

	// Output is the price of 1M completion tokens. Default: Input.
	Output *float64 `json:"output,omitempty"`

	// CachedInput is the price of 1M cached prompt tokens. Default: Input.
	CachedInput *float64 `json:"cached_input,omitempty"`
}

// unitPrice is a Price with its defaults applied.
type unitPrice struct {
	input, output, cachedInput float64
	known                      bool
}

// builtinPrice is a list price per 1M tokens, in USD, as its provider
// publishes it: input, output and cached (prompt cache hit) input.
type builtinPrice struct {
	unitPrice
	source string // the provider's pricing page
	read   string // when the figures were read there
}

// builtinPrices are the providers' list prices, by model name (README,
// "Prices"). Each row says where it comes from and when it was read;
// providers change prices, and a Caddyfile `price` always wins.
var builtinPrices = map[string]builtinPrice{
	"gpt-4.1": {unitPrice{input: 2, output: 8, cachedInput: 0.50, known: true},
		"https://platform.openai.com/docs/pricing", "2026-03"},
	"claude-sonnet-4.5": {unitPrice{input: 3, output: 15, cachedInput: 0.30, known: true},
		"https://www.anthropic.com/pricing#api (cache reads)", "2026-03"},
	"gemini-2.5-flash": {unitPrice{input: 0.30, output: 2.50, cachedInput: 0.075, known: true},
		"https://ai.google.dev/gemini-api/docs/pricing (text input, context cache reads)", "2026-05"},
	"deepseek-v3.2": {unitPrice{input: 0.28, output: 0.42, cachedInput: 0.028, known: true},
		"https://api-docs.deepseek.com/quick_start/pricing (deepseek-chat: cache miss, output, cache hit)", "2026-03"},
}

func (p *Price) validate() error {
	if p == nil {
		return nil
	}
	if p.Input < 0 || (p.Output != nil && *p.Output < 0) || (p.CachedInput != nil && *p.CachedInput < 0) {
		return errors.New("price must not be negative")
	}
	return nil
}

func (p *Price) unit() unitPrice {
	u := unitPrice{input: p.Input, output: p.Input, cachedInput: p.Input, known: true}
	if p.Output != nil {
		u.output = *p.Output
	}
	if p.CachedInput != nil {
		u.cachedInput = *p.CachedInput
	}
	return u
}

// priceFor is the price of model m among all declared models: its own, else
// one given on another deployment of the same name, else the built-in one
// for its name or upstream id, else zero with a warning to log.
func priceFor(models []*Model, m *Model) (unitPrice, string) {
	if m.Price != nil {
		return m.Price.unit(), ""
	}
	for _, other := range models {
		if other.Name == m.Name && other.Price != nil {
			return other.Price.unit(), ""
		}
	}
	if p, ok := builtinPrices[m.Name]; ok {
		return p.unitPrice, ""
	}
	if p, ok := builtinPrices[m.Upstream]; ok {
		return p.unitPrice, ""
	}
	return unitPrice{}, "model has no price; its cost is counted as 0"
}

// usage is what one answer consumed (internal/openai reads it).
type usage = openai.Usage

// cost is the price of u in price units; cached prompt tokens are part of
// the prompt count and billed at the cached price.
func (p unitPrice) cost(u usage) float64 {
	return p.costOf(float64(u.Input), float64(u.CachedInput), float64(u.Output))
}

// costOf is cost on token counts as floats: `caddy llm-router cost`
// projects counts past int64 with it.
func (p unitPrice) costOf(input, cachedInput, output float64) float64 {
	uncached := max(input-cachedInput, 0)
	return (uncached*p.input + cachedInput*p.cachedInput + output*p.output) / 1e6
}
