package llmrouter

import (
	"encoding/json"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/llmrouter/caddy-llm-router/internal/openai"
)

// endpoint is the OpenAI API a request is for. Its name is the `endpoint`
// label of caddy_llm_router_requests_total and of the stats.
type endpoint uint8

const (
	chatEndpoint endpoint = iota + 1
	completionsEndpoint
	responsesEndpoint
	embeddingsEndpoint
	modelsEndpoint // GET …/models and GET …/models/{id}, answered locally
	endpointCount
)

var endpointNames = [endpointCount]string{"", "chat", "completions", "responses", "embeddings", "models"}

// upstreamPaths are appended to a provider's base_url.
var upstreamPaths = [endpointCount]string{"", "/chat/completions", "/completions", "/responses", "/embeddings", "/models"}

func (e endpoint) String() string { return endpointNames[e] }

// path is the endpoint's path below the API root, for messages.
func (e endpoint) path() string { return upstreamPaths[e] }

// kind is the kind of model the endpoint needs.
func (e endpoint) kind() modelKind {
	if e == embeddingsEndpoint {
		return kindEmbedding
	}
	return kindChat
}

// api is the wire format of the endpoint's requests and answers.
func (e endpoint) api() openai.API { return openai.API(e) }

// endpointOf finds the endpoint a path is for, by its suffix (the handler's
// matcher says where the API root is), the one method it takes, and for
// GET …/models/{id} what follows the path's first "/models/" (serveModels
// finds the id in it). It returns 0 for a path the router does not serve.
func endpointOf(path string) (ep endpoint, method, modelID string) {
	switch {
	case strings.HasSuffix(path, "/chat/completions"):
		return chatEndpoint, http.MethodPost, ""
	case strings.HasSuffix(path, "/completions"):
		return completionsEndpoint, http.MethodPost, ""
	case strings.HasSuffix(path, "/responses"):
		return responsesEndpoint, http.MethodPost, ""
	case strings.HasSuffix(path, "/embeddings"):
		return embeddingsEndpoint, http.MethodPost, ""
	case strings.HasSuffix(path, "/models"):
		return modelsEndpoint, http.MethodGet, ""
	}
	if i := strings.Index(path, "/models/"); i >= 0 && len(path) > i+len("/models/") {
		return modelsEndpoint, http.MethodGet, path[i+len("/models/"):]
	}
	return 0, "", ""
}

// modelKind is what a model serves: chat-style generation (chat,
// completions and responses requests) or embeddings.
type modelKind uint8

const (
	kindChat modelKind = iota + 1
	kindEmbedding
)

func (k modelKind) String() string {
	if k == kindEmbedding {
		return "embedding"
	}
	return "chat"
}

// aModel is "a chat model" or "an embedding model", for messages.
func (k modelKind) aModel() string {
	if k == kindEmbedding {
		return "an embedding model"
	}
	return "a chat model"
}

// parseKind reads a `kind` setting; "" is unknown.
func parseKind(s string) (modelKind, bool) {
	switch s {
	case "chat":
		return kindChat, true
	case "embedding", "embeddings":
		return kindEmbedding, true
	}
	return 0, false
}

// builtinEmbeddingModels are embedding model ids known by name; any id
// containing "embed" is one too.
var builtinEmbeddingModels = []string{"text-embedding-3-small", "text-embedding-3-large", "text-embedding-ada-002"}

// kindOf is a model's kind when the config does not say: embedding for the
// known embedding ids and anything named like one, else chat.
func kindOf(name, upstream string) modelKind {
	for _, id := range []string{name, upstream} {
		if slices.Contains(builtinEmbeddingModels, id) || strings.Contains(strings.ToLower(id), "embed") {
			return kindEmbedding
		}
	}
	return kindChat
}

// modelObject is an entry of OpenAI's model list.
type modelObject struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	OwnedBy string `json:"owned_by"`
	// Route is true for a route name: a query type, not one model.
	Route bool `json:"llm_router_route,omitempty"`
	// Kind is "chat" or "embedding".
	Kind string `json:"llm_router_kind,omitempty"`
}

// buildModelAnswers precomputes the local answers of GET /models (every
// model name, owned by its first provider, then every route name, owned by
// "llm_router") and of GET /models/{id}.
func (r *Router) buildModelAnswers() {
	list := struct {
		Object string        `json:"object"`
		Data   []modelObject `json:"data"`
	}{Object: "list", Data: []modelObject{}}
	seen := make(map[string]bool)
	for _, d := range r.deployments {
		if !seen[d.name] {
			seen[d.name] = true
			list.Data = append(list.Data, modelObject{ID: d.name, Object: "model", OwnedBy: d.id.provider, Kind: d.kind.String()})
		}
	}
	for _, name := range slices.Sorted(maps.Keys(r.Routes)) {
		list.Data = append(list.Data, modelObject{ID: name, Object: "model", OwnedBy: "llm_router", Route: true,
			Kind: r.routing.byRoute[name].kind.String()})
	}
	r.modelsJSON, _ = json.Marshal(list)
	r.modelJSON = make(map[string][]byte, len(list.Data))
	for _, m := range list.Data {
		r.modelJSON[m.ID], _ = json.Marshal(m)
	}
}

// serveModels answers GET …/models, or GET …/models/{id} when id is set,
// and returns the status sent. id is what follows the path's first
// "/models/": a model id in parts may have "/models/" in it (Fireworks'
// "accounts/fireworks/models/…"), and so may the API root, so the longest
// tail of id after a "/models/" that names a model or route is the one
// asked for.
func (r *Router) serveModels(w http.ResponseWriter, id string) int {
	body := r.modelsJSON
	for id != "" {
		var ok bool
		if body, ok = r.modelJSON[id]; ok {
			break
		}
		i := strings.Index(id, "/models/")
		if i < 0 {
			e := invalidRequest(http.StatusNotFound, codeModelNotFound, "model",
				"The model '"+truncate(id, maxEchoedName)+"' does not exist on this gateway")
			e.write(w)
			return e.status
		}
		id = id[i+len("/models/"):]
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	_, _ = w.Write(body)
	return http.StatusOK
}
