package llmrouter

import (
	"encoding/json"
	"net/http"
	"strconv"
)

// Error codes and types of the responses the router makes itself.
const (
	codeUnreadableBody   = "unreadable_body"
	codeModelNotFound    = "model_not_found"
	codeWrongModelKind   = "model_not_supported"
	codeTooLarge         = "request_too_large"
	codeUnknownURL       = "unknown_url"
	codeMethodNotAllowed = "method_not_allowed"
	codeAllUnavailable   = "all_models_unavailable"
	codeStreamBroken     = "upstream_stream_broken"
	codeDuplicateHeader  = "duplicate_header"
	codeNoConversation   = "conversation_not_found"
	codeNoItem           = "item_not_found"
	codeNoPrompt         = "prompt_not_found"
	codeNoResponse       = "previous_response_not_found"
	codeRateLimited      = "rate_limit_exceeded"
	typeInvalidRequest   = "invalid_request_error"
	typeTokens           = "tokens" // OpenAI's type of a rate limit on tokens
	typeServerError      = "server_error"
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

// routerError is an error the router answers itself.
type routerError struct {
	status     int
	typ, code  string
	param      string // the request member at fault, if any
	msg        string
	retryAfter int  // seconds; 0: no Retry-After
	final      bool // no retry can succeed: X-Should-Retry: false
}

// envelope is the error's JSON body.
func (e *routerError) envelope() []byte {
	body := apiErrorBody{Message: e.msg, Type: e.typ, Code: e.code}
	if e.param != "" {
		body.Param = &e.param
	}
	b, _ := json.Marshal(apiError{Error: body})
	return b
}

// write sends the error as an OpenAI-style answer.
func (e *routerError) write(w http.ResponseWriter) {
	b := e.envelope()
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(b)))
	if e.retryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(e.retryAfter))
	}
	if e.retryAfter > maxSDKRetryWait || e.final {
		// the official Node SDK sleeps whatever Retry-After says before
		// each of its retries (hours, to a budget period's end), Python's
		// retries at once past a minute: a wait this long is better left
		// to the client than to a retry inside the SDK's call; and an
		// error no retry cures is not retried at all
		h.Set("X-Should-Retry", "false")
	}
	w.WriteHeader(e.status)
	_, _ = w.Write(b)
}

// maxSDKRetryWait is the longest Retry-After, in seconds, of an error the
// SDKs may retry by themselves: a minute, the most Python's SDK honours.
const maxSDKRetryWait = 60

// invalidRequest is a 4xx of the client's own making.
func invalidRequest(status int, code, param, msg string) *routerError {
	return &routerError{status: status, typ: typeInvalidRequest, code: code, param: param, msg: msg}
}
