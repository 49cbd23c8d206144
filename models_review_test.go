package llmrouter

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"

	"github.com/caddyserver/caddy/v2"
)

// TestModelRetrieveOfAnIDWithModelsInIt: a model id in parts, as
// Fireworks names its models ("accounts/fireworks/models/…"), is
// retrieved by GET …/models/{id}, the SDKs escaping its slashes (which
// the path decodes). The id was read after the path's last "/models/",
// so such a model got 404 model_not_found though the list has it.
func TestModelRetrieveOfAnIDWithModelsInIt(t *testing.T) {
	const id = "accounts/fireworks/models/llama-v3p1-8b-instruct"
	r := benchRouter(t, "http://127.0.0.1:1", func(r *Router) {
		r.Models = append(r.Models, &Model{Name: id, Price: &Price{Input: 0.2}})
	})
	cases := map[string]string{
		"/v1/models/" + id:                 id,
		"/v1/models/" + url.PathEscape(id): id,
		// an API root with "/models/" in it
		"/models/v1/models/deepseek-v3.2": "deepseek-v3.2",
	}
	for path, want := range cases {
		req := httptest.NewRequest(http.MethodGet, path, nil)
		req = req.WithContext(context.WithValue(req.Context(), caddy.ReplacerCtxKey, caddy.NewReplacer()))
		w := httptest.NewRecorder()
		_ = r.ServeHTTP(w, req, nil)
		var m modelObject
		if w.Code != http.StatusOK || json.Unmarshal(w.Body.Bytes(), &m) != nil || m.ID != want {
			t.Errorf("GET %s: %d %s, want the model %s", path, w.Code, w.Body, want)
		}
	}
}
