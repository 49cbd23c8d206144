package llmrouter

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/llmrouter/caddy-llm-router/internal/mockllm"
)

// calibrateConfig is a Caddyfile whose semantic cache embeds with the
// mock's word vectors; {MOCK} and {BACKUP} are the mocks' URLs.
const calibrateConfig = `{
	admin off
}
:8080 {
	llm_router {
		provider primary {
			base_url {MOCK}/v1
			api_key sk-calibration-test
		}
		provider backup {
			base_url {BACKUP}/v1
			api_key sk-calibration-backup
		}
		model deepseek-v3.2
		model embed-words {
			kind embedding
		}
		model embed-words {
			provider backup
			priority 1
			kind embedding
		}
		cache {
			semantic {
				model embed-words
				threshold 0.9
			}
		}
	}
}
`

// calibrate runs the command on the shipped pairs against mocks and
// returns its output.
func calibrate(t *testing.T, primary *mockllm.Server) string {
	t.Helper()
	backup := mockllm.New()
	backup.Set("embed-words", mockllm.Behavior{WordVectors: 256})
	config := strings.NewReplacer("{MOCK}", newMockServer(primary).URL, "{BACKUP}", newMockServer(backup).URL).Replace(calibrateConfig)
	path := filepath.Join(t.TempDir(), "Caddyfile")
	if err := os.WriteFile(path, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := runCalibrate(context.Background(), &out, path, "", calibrateOptions{Handler: 1, Precision: 0.99}, "testdata/semantic/shop-pairs.jsonl"); err != nil {
		t.Fatal(err)
	}
	return out.String()
}

// TestSemanticCalibrateGolden: the calibration of the shipped shop pairs
// with the mock's word vectors is testdata/semantic/calibrate.golden (the
// table the README shows); the questions go to the first deployment of
// the model that answers.
func TestSemanticCalibrateGolden(t *testing.T) {
	primary := mockllm.New()
	primary.Set("embed-words", mockllm.Behavior{WordVectors: 256})
	got := calibrate(t, primary)
	checkCostGolden(t, "semantic/calibrate.golden", []byte(got))
	if n := len(primary.RequestsFor("embed-words")); n == 0 {
		t.Error("the questions were not embedded by the first deployment")
	}

	// the first deployment failing, the backup embeds: the same table
	failing := mockllm.New()
	failing.Set("embed-words", mockllm.Behavior{Status: 500})
	if again := calibrate(t, failing); again != strings.Replace(got, "embed-words@primary", "embed-words@backup", 1) {
		t.Errorf("with the first deployment failing:\n%s", again)
	}
}

// TestSemanticCalibrateErrorHasNoKey: a provider that echoes the request in
// a response Go cannot parse has its words quoted in the transport's
// error, which semantic-calibrate prints: the provider's keys in it are
// masked there too, as in the gateway's 503 (TestTransportErrorHasNoKey)
// and its health checks' errors.
func TestSemanticCalibrateErrorHasNoKey(t *testing.T) {
	echo := "http://" + rawProvider(t, func(c net.Conn, req *http.Request) {
		io.WriteString(c, "HTTP/1.1 200 OK\r\nEcho Authorization "+req.Header.Get("Authorization")+"\r\n\r\n")
	})
	config := strings.NewReplacer("{MOCK}", echo, "{BACKUP}", echo).Replace(calibrateConfig)
	err := calibrateFailing(t, config)
	for _, key := range []string{"sk-calibration-test", "sk-calibration-backup"} {
		if strings.Contains(err.Error(), key) {
			t.Errorf("the error shows the key %s: %v", key, err)
		}
	}
}

// TestSemanticCalibrateFollowsNoRedirect: semantic-calibrate sends its
// questions to each provider as the gateway does, following no redirect:
// Go's client follows one to any host, with the provider's `header`
// credentials (Azure's api-key: Go drops only Authorization and cookies
// on the way to another domain), its key (to another port of the same
// host) and the questions.
func TestSemanticCalibrateFollowsNoRedirect(t *testing.T) {
	var got atomic.Value
	elsewhere := newMockServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if v := r.Header.Get("Api-Key") + r.Header.Get("Authorization"); v != "" {
			got.Store(v)
		}
		http.Error(w, "no", http.StatusNotFound)
	}))
	redirecting := newMockServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, elsewhere.URL+"/v1/embeddings", http.StatusTemporaryRedirect)
	}))
	config := strings.NewReplacer("{MOCK}", redirecting.URL, "{BACKUP}", redirecting.URL,
		"api_key sk-calibration-test", "header api-key sk-azure-secret-0001").Replace(calibrateConfig)
	err := calibrateFailing(t, config)
	if v, _ := got.Load().(string); v != "" {
		t.Errorf("the redirect's target got the provider's credentials %q (%v)", v, err)
	}
}

// calibrateFailing runs semantic-calibrate on config (handler 1, the
// shop pairs), which must fail, and returns its error.
func calibrateFailing(t *testing.T, config string) error {
	t.Helper()
	path := filepath.Join(t.TempDir(), "Caddyfile")
	if err := os.WriteFile(path, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	err := runCalibrate(t.Context(), io.Discard, path, "", calibrateOptions{Handler: 1, Precision: 0.99}, "testdata/semantic/shop-pairs.jsonl")
	if err == nil {
		t.Fatal("calibrated against providers that answer nothing")
	}
	return err
}
