package llmrouter

import (
	"encoding/json"
	"net/http"
	"strconv"
)

// Error codes of the responses the router makes itself.
const (
	codeInvalidJSON    = "invalid_json"
	codeMissingParam   = "missing_required_parameter"
	codeModelNotFound  = "model_not_found"
	codeTooLarge       = "request_too_large"
	codeAllUnavailable = "all_models_unavailable"
	typeInvalidRequest = "invalid_request_error"
	typeServerError    = "server_error"
)

// apiError is OpenAI's error envelope, so clients' SDKs raise their usual
// exceptions for the router's own errors.
type apiError struct {
	Error apiErrorBody `json:"error"`
}

type apiErrorBody struct {
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    string  `json:"code"`
}

// writeError sends an OpenAI-style error. retryAfter > 0 adds Retry-After
// in whole seconds.
func writeError(w http.ResponseWriter, status int, typ, code, msg string, retryAfter int) {
	b, _ := json.Marshal(apiError{Error: apiErrorBody{Message: msg, Type: typ, Code: code}})
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(b)))
	if retryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(retryAfter))
	}
	w.WriteHeader(status)
	_, _ = w.Write(b)
}
