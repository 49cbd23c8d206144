// Command mockllm runs the fault-injecting OpenAI-compatible mock upstream
// from internal/mockllm as a standalone HTTP server, for manual and
// out-of-process testing of the gateway.
//
// The mock answers on /v1/... (any path ending in /chat/completions,
// /completions, /responses, /embeddings or /models, and GET …/models/{id}).
// A control API lives under /_mock/:
//
//	POST   /_mock/behavior?model=<id>  JSON Behavior body, e.g. {"status":503,"times":2},
//	                                   {"latency":"50ms","break_after_chunks":3},
//	                                   {"status":400,"echo":true}, {"error_event":true},
//	                                   {"content_type":"text/html","body":"<html>..."},
//	                                   {"empty_body":true} or {"truncate_after":20}; without
//	                                   ?model it sets the default for all models.
//	                                   Unset latency, chunk_delay and chunks fall back to the flags.
//	DELETE /_mock/behavior             back to healthy (the flag defaults)
//	GET    /_mock/requests             {"<model>": <count>, ...} of requests received
package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/llmrouter/caddy-llm-router/internal/mockllm"
	"github.com/llmrouter/caddy-llm-router/internal/testkit"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:9900", "address to listen on")
	key := flag.String("key", "", "require \"Authorization: Bearer <key>\" on every mock request")
	latency := flag.Duration("latency", 0, "latency before every response, for all models")
	chunkDelay := flag.Duration("chunk-delay", 0, "delay between stream chunks, for all models")
	chunks := flag.Int("chunks", 0, "content chunks / words per answer (0 = 10)")
	tlsCA := flag.String("tls-ca", "", "serve HTTPS (HTTP/2 and 1.1) with a fresh self-signed certificate for 127.0.0.1, written to this PEM file for clients to trust")
	flag.Parse()

	def := mockllm.Behavior{Latency: *latency, ChunkDelay: *chunkDelay, Chunks: *chunks}
	if err := run(*listen, *key, *tlsCA, def); err != nil {
		fmt.Fprintln(os.Stderr, "mockllm:", err)
		os.Exit(1)
	}
}

func run(addr, key, tlsCA string, def mockllm.Behavior) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	mock := mockllm.New()
	// a standalone mock serves benchmarks: it counts requests, and keeps
	// none (see Server.SetRecord)
	mock.SetRecord(false)
	mock.SetRequireKey(key)
	mock.SetDefault(def)

	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: newHandler(mock, def), ReadHeaderTimeout: 10 * time.Second}
	if tlsCA != "" {
		cert, caPEM, err := testkit.SelfSignedCert()
		if err != nil {
			return err
		}
		if err := os.WriteFile(tlsCA, caPEM, 0o644); err != nil {
			return err
		}
		srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2", "http/1.1"}}
		ln = tls.NewListener(ln, srv.TLSConfig)
	}
	fmt.Fprintf(os.Stderr, "mockllm listening on %s\n", ln.Addr())

	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		_ = srv.Close()
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// newHandler serves the control API under /_mock/ and the mock elsewhere.
func newHandler(mock *mockllm.Server, def mockllm.Behavior) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/_mock/behavior", func(w http.ResponseWriter, r *http.Request) {
		switch r.Method {
		case http.MethodPost:
			var b mockllm.Behavior
			body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
			if err == nil {
				err = json.Unmarshal(body, &b)
			}
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			if b.Latency == 0 {
				b.Latency = def.Latency
			}
			if b.ChunkDelay == 0 {
				b.ChunkDelay = def.ChunkDelay
			}
			if b.Chunks == 0 {
				b.Chunks = def.Chunks
			}
			if model, ok := r.URL.Query()["model"]; ok {
				mock.Set(model[0], b)
			} else {
				mock.SetDefault(b)
			}
			w.WriteHeader(http.StatusNoContent)
		case http.MethodDelete:
			mock.Clear()
			mock.SetDefault(def)
			w.WriteHeader(http.StatusNoContent)
		default:
			w.Header().Set("Allow", "POST, DELETE")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		}
	})
	mux.HandleFunc("GET /_mock/requests", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(mock.RequestCounts())
	})
	mux.HandleFunc("/_mock/", http.NotFound)
	mux.Handle("/", mock)
	return mux
}
