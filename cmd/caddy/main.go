// Command caddy is Caddy with the llm_router module and the rate_limit
// handler built in, for running the gateway from a checkout:
//
//	go build -o caddy ./cmd/caddy
//
// Users outside this repository build the same binary with
//
//	xcaddy build --with github.com/llmrouter/caddy-llm-router --with github.com/mholt/caddy-ratelimit@v0.1.0
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	_ "github.com/caddyserver/caddy/v2/modules/standard"
	_ "github.com/mholt/caddy-ratelimit"

	_ "github.com/llmrouter/caddy-llm-router"
)

func main() {
	caddycmd.Main()
}
