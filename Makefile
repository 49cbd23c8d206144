# caddy-llm-router: build, test and demo from a checkout.

GO ?= go

.PHONY: all build test demo clean

all: build

## build: ./caddy (Caddy with llm_router and rate_limit) and ./mockllm
build:
	$(GO) build -o caddy ./cmd/caddy
	$(GO) build -o mockllm ./cmd/mockllm

## test: the test command of the README (and of CI)
test:
	cd sdktest && npm ci --no-audit --no-fund
	$(GO) vet ./... && $(GO) test -race -count=1 ./...

## demo: build, start the mock and Caddy on free local ports, send requests
demo:
	bash scripts/demo.sh

clean:
	rm -f caddy mockllm
