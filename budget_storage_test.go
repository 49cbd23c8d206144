package llmrouter

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/caddyserver/certmagic"
)

// flakyLoadStorage is a file storage whose reads of one key fail (not as
// a missing key: a network storage that timed out) while fail is set.
type flakyLoadStorage struct {
	certmagic.FileStorage
	key  string
	fail bool
}

func (s *flakyLoadStorage) Load(ctx context.Context, key string) ([]byte, error) {
	if s.fail && key == s.key {
		return nil, errors.New("storage unavailable")
	}
	return s.FileStorage.Load(ctx, key)
}

// TestFleetSecretKeptOnReadError: a process that cannot read the fleet's
// key secret (the storage fails, the secret is there) must not make a new
// one over it: every process started after it would hash keys under
// another secret, and each key would get its budget afresh.
func TestFleetSecretKeptOnReadError(t *testing.T) {
	ctx := context.Background()
	st := &flakyLoadStorage{FileStorage: certmagic.FileStorage{Path: t.TempDir()}, key: keySecretPath}
	first, err := fleetSecret(ctx, st)
	if err != nil {
		t.Fatal(err)
	}
	st.fail = true
	if got, err := fleetSecret(ctx, st); err == nil && !bytes.Equal(got, first) {
		t.Errorf("a failed read of the secret gave another secret, without an error")
	}
	st.fail = false
	if stored, err := st.Load(ctx, keySecretPath); err != nil || !bytes.Equal(stored, first) {
		t.Errorf("the fleet's secret in storage was replaced after a failed read (err %v)", err)
	}
}
