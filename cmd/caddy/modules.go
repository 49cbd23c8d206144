package main

// The gateway itself: registers the http.handlers.llm_router module and the
// llm_router Caddyfile directive. Without this import `./caddy` would not
// know the directive.
import _ "github.com/llmrouter/caddy-llm-router"
