package llmrouter

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/llmrouter/caddy-llm-router/internal/openai"
	"github.com/llmrouter/caddy-llm-router/internal/semantic"
)

// calibrateOptions is what `caddy llm-router semantic-calibrate` is asked.
type calibrateOptions struct {
	Handler   int     // which llm_router of the config, from 1
	Precision float64 // the share of served hits that must be right
}

// calibrateBatch is how many questions one embeddings request carries.
const calibrateBatch = 64

// runCalibrate is `caddy llm-router semantic-calibrate`: it embeds both
// questions of each labelled pair with the handler's semantic model,
// through its configured providers (the first deployment that answers),
// and prints precision and recall of the semantic lookup, guards
// applied, at each threshold.
func runCalibrate(ctx context.Context, w io.Writer, configFile, adapter string, opts calibrateOptions, pairsFile string) error {
	targets, err := loadCostTargets(configFile, adapter)
	if err != nil {
		return err
	}
	if opts.Handler < 1 || opts.Handler > len(targets) {
		return fmt.Errorf("--handler %d: the config has %d llm_router handlers", opts.Handler, len(targets))
	}
	t := targets[opts.Handler-1]
	r := t.Router
	if r.Cache == nil || r.Cache.Semantic == nil {
		return fmt.Errorf("llm_router #%d has no cache { semantic { … } } to calibrate", opts.Handler)
	}
	f, err := os.Open(pairsFile)
	if err != nil {
		return err
	}
	defer f.Close()
	pairs, err := semantic.ParsePairs(f)
	if err != nil {
		return fmt.Errorf("%s: %w", pairsFile, err)
	}
	if len(pairs) == 0 {
		return fmt.Errorf("%s: no pairs", pairsFile)
	}
	r.setDefaults()
	if err := r.validate(); err != nil {
		return err
	}
	emb, err := newCalibrationEmbedder(r)
	if err != nil {
		return err
	}
	texts := make([]string, 0, 2*len(pairs))
	for _, p := range pairs {
		texts = append(texts, p.A, p.B)
	}
	vecs, err := emb.embed(ctx, texts)
	if err != nil {
		return err
	}
	for i := range pairs {
		pairs[i].Similarity = cosine(vecs[2*i], vecs[2*i+1])
	}
	sc := r.Cache.Semantic
	configured := sc.Threshold
	if configured == 0 {
		configured = defaultSemanticThreshold
	}
	fmt.Fprintf(w, "llm_router #%d", opts.Handler)
	if t.Where != "" {
		fmt.Fprintf(w, ": %s", t.Where)
	}
	fmt.Fprintf(w, "; semantic model %s (%s), threshold %.2f configured\n", sc.Model, emb.used, configured)
	return semantic.Calibrate(pairs, semantic.DefaultThresholds(), opts.Precision).Write(w)
}

// calibrationEmbedder embeds texts with the deployments of one embedding
// model, in their priority order, with each provider's own transport and
// key: the first that answers a batch embeds it.
type calibrationEmbedder struct {
	model       string
	deployments []calibrationTarget
	used        string // the deployments that answered, for the report
}

type calibrationTarget struct {
	label    string // model@provider
	upstream string // the model name the provider knows
	url      string
	key      string
	headers  http.Header
	client   *http.Client
	// scrub masks the provider's key and header credentials in what a
	// transport error quotes of its answer (provider.scrubKey): it may
	// echo the request, and the error is printed
	scrub func(string) string
}

func newCalibrationEmbedder(r *Router) (*calibrationEmbedder, error) {
	model := r.Cache.Semantic.Model
	cctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	repl := caddy.NewReplacer()
	providers := map[string]*provider{}
	for i := range r.Providers {
		p, err := newProvider(cctx, r.Providers[i], repl, zap.NewNop())
		if err != nil {
			return nil, err
		}
		providers[p.name] = p
	}
	models := slices.Clone(r.Models)
	slices.SortStableFunc(models, func(a, b *Model) int { return a.Priority - b.Priority })
	e := &calibrationEmbedder{model: model}
	for _, m := range models {
		if m.Name != model {
			continue
		}
		p := providers[m.Provider]
		upstream := m.Upstream
		if upstream == "" {
			upstream = m.Name
		}
		timeout := p.timeout
		if timeout <= 0 {
			timeout = time.Minute
		}
		e.deployments = append(e.deployments, calibrationTarget{
			label: m.Name + "@" + m.Provider, upstream: upstream, url: p.urls[embeddingsEndpoint].String(),
			key: p.key, headers: p.headers, client: &http.Client{Transport: p.transport, Timeout: timeout, CheckRedirect: noRedirect}, scrub: p.scrubKey,
		})
	}
	if len(e.deployments) == 0 {
		return nil, fmt.Errorf("no deployment of the semantic model %q", model)
	}
	return e, nil
}

// noRedirect makes a calibration's client follow no redirect, as the
// gateway's requests do not: Go's client would send the provider's
// `header` credentials (all but Authorization to another domain) and the
// questions wherever the provider points. The 3xx is the provider's
// failure.
func noRedirect(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

// embed returns a vector for each text, in order.
func (e *calibrationEmbedder) embed(ctx context.Context, texts []string) ([][]float32, error) {
	out := make([][]float32, 0, len(texts))
	used := map[string]bool{}
	for start := 0; start < len(texts); start += calibrateBatch {
		batch := texts[start:min(start+calibrateBatch, len(texts))]
		var errs []error
		var vecs [][]float32
		for _, d := range e.deployments {
			v, err := d.embed(ctx, batch)
			if err == nil {
				vecs = v
				used[d.label] = true
				break
			}
			errs = append(errs, fmt.Errorf("%s: %w", d.label, err))
		}
		if vecs == nil {
			return nil, fmt.Errorf("embedding questions %d to %d: %w", start+1, start+len(batch), errors.Join(errs...))
		}
		out = append(out, vecs...)
	}
	labels := make([]string, 0, len(used))
	for l := range used {
		labels = append(labels, l)
	}
	slices.Sort(labels)
	e.used = strings.Join(labels, ", ")
	return out, nil
}

// embed asks one deployment for the vectors of a batch of texts.
func (d *calibrationTarget) embed(ctx context.Context, texts []string) ([][]float32, error) {
	body, err := json.Marshal(struct {
		Model          string   `json:"model"`
		Input          []string `json:"input"`
		EncodingFormat string   `json:"encoding_format"`
	}{d.upstream, texts, "base64"})
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	for field, vals := range d.headers {
		req.Header[field] = vals
	}
	req.Header.Set("Content-Type", "application/json")
	if d.key != "" {
		req.Header.Set("Authorization", "Bearer "+d.key)
	}
	resp, err := d.client.Do(req)
	if err != nil {
		return nil, errors.New(transportErrorText(err, d.scrub))
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 256<<20))
	if err != nil {
		return nil, errors.New(transportErrorText(err, d.scrub))
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%d %s", resp.StatusCode, http.StatusText(resp.StatusCode))
	}
	return openai.EmbeddingVectors(raw, len(texts))
}

// cosine is the cosine similarity of a and b (0 when either is zero or
// their dimensions differ).
func cosine(a, b []float32) float64 {
	if len(a) != len(b) {
		return 0
	}
	var dot, na, nb float64
	for i := range a {
		dot += float64(a[i]) * float64(b[i])
		na += float64(a[i]) * float64(a[i])
		nb += float64(b[i]) * float64(b[i])
	}
	if na == 0 || nb == 0 {
		return 0
	}
	return dot / math.Sqrt(na*nb)
}
