package openai

import (
	"testing"
)

// TestResponseID: the id of a Responses answer (its top-level "id") or of
// the response a stream event carries ("response"."id"), read one level
// down only.
func TestResponseID(t *testing.T) {
	cases := []struct{ data, want string }{
		{`{"type":"response.created","sequence_number":0,"response":{"id":"resp_1","object":"response","output":[]}}`, "resp_1"},
		{`{"id":"resp_2","object":"response","output":[{"id":"msg_1"}]}`, "resp_2"},
		{`{"type":"response.completed","response":{"output":[{"id":"msg_1"}],"id":"resp_3"}}`, "resp_3"},
		{`{"id":"resp_\u0034"}`, "resp_4"},
		{` { "response" : { "id" : "resp_5" } } `, "resp_5"},
		// the response's id over an event's own
		{`{"id":"evt_1","response":{"id":"resp_6"}}`, "resp_6"},
		{`{"id":"resp_7","response":{"status":"x"}}`, "resp_7"},
		{`{"type":"response.output_item.added","item":{"id":"msg_1"}}`, ""},
		{`{"type":"response.output_text.delta","delta":"\"id\":\"x\""}`, ""},
		{`{"response":{"response":{"id":"deep"}}}`, ""},
		{`{"response":{"item":{"id":"deep"}}}`, ""},
		{`{"id":7}`, ""},
		{`{"response":{"id":null}}`, ""},
		{`{"response":"resp_8"}`, ""},
		{`{"Id":"resp_9"}`, ""},
		{`[DONE]`, ""},
		{``, ""},
	}
	for _, tc := range cases {
		if got := ResponseID([]byte(tc.data)); got != tc.want {
			t.Errorf("ResponseID(%s) = %q, want %q", tc.data, got, tc.want)
		}
	}
	// the id outlives the event's buffer
	data := []byte(`{"response":{"id":"resp_10"}}`)
	id := ResponseID(data)
	copy(data, "xxxxxxxxxxxxxxxxxxxxxxxxxxxx")
	if id != "resp_10" {
		t.Errorf("the id changed with the buffer: %q", id)
	}
}

// TestResponseIDDeep: nesting is read once, not once per level (it was
// quadratic in the depth); an id deeper than response.id is not one.
func TestResponseIDDeep(t *testing.T) {
	for _, depth := range []int{2, 100, 9000} {
		if got := ResponseID(nestedResponses(depth)); got != "" {
			t.Errorf("depth %d: %q, want none", depth, got)
		}
	}
	if got := ResponseID(nestedResponses(1)); got != "deep" {
		t.Errorf("depth 1: %q, want deep", got)
	}
}

// TestEventType: the event's own top-level type, the last if repeated,
// decoded; never a member of that name deeper down.
func TestEventType(t *testing.T) {
	cases := []struct{ data, want string }{
		{`{"type":"response.completed","response":{}}`, "response.completed"},
		{`{"sequence_number": 3, "type" : "response.incomplete"}`, "response.incomplete"},
		{`{"type":"response.created","response":{"metadata":{"type":"response.completed","x":"response.completed"}}}`, "response.created"},
		{`{"item":{"type":"response.completed"}}`, ""},
		{`{"type":"response.c\u006fmpleted"}`, "response.completed"},
		{`{"type":"response.completed","type":"response.created"}`, "response.created"},
		{`{"type":"response.completed","type":null}`, ""},
		{`{"type":1}`, ""},
		{`{"Type":"response.completed"}`, ""},
		{`[{"type":"response.completed"}]`, ""},
		{`{"type":"response.completed",}`, ""},
		{`{"type":"response.completed"`, ""},
		{`[DONE]`, ""},
		{``, ""},
	}
	for _, tc := range cases {
		if got := EventType([]byte(tc.data)); got != tc.want {
			t.Errorf("EventType(%s) = %q, want %q", tc.data, got, tc.want)
		}
	}
}
