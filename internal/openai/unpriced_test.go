package openai

import (
	"slices"
	"testing"
)

// TestUnpriced: what a provider bills apart from tokens is found whatever
// its spelling of names, and function tools are not among it.
func TestUnpriced(t *testing.T) {
	for _, tc := range []struct {
		api  API
		body string
		want []string
	}{
		{Chat, `{"messages":[],"tools":[{"type":"function","function":{"name":"f"}}]}`, nil},
		{Chat, `{"messages":[],"tools":[{"type":"custom","custom":{"name":"f"}}],"functions":[{"name":"g"}]}`, nil},
		{Chat, `{"messages":[],"web_search_options":null,"audio":null,"modalities":["text"]}`, nil},
		{Chat, `{"messages":[],"web_search_options":{}}`, []string{"web_search"}},
		{Chat, `{"messages":[],"modalities":["text","aud\u0069o"]}`, []string{"audio"}},
		{Chat, `{"messages":[],"audio":{"voice":"alloy"}}`, []string{"audio"}},
		{Responses, `{"input":"x","tools":[{"type":"web_search_preview"},{"type":"file_search"},{"type":"web_search_preview"}]}`, []string{"web_search_preview", "file_search"}},
		{Responses, `{"input":"x","tools":[{"name":"f","t\u0079pe":"code_interpreter"}]}`, []string{"code_interpreter"}},
	} {
		var r Request
		if err := r.Parse([]byte(tc.body), tc.api); err != nil {
			t.Errorf("%s: %v", tc.body, err)
			continue
		}
		if !slices.Equal(r.Unpriced, tc.want) {
			t.Errorf("%s: unpriced %q, want %q", tc.body, r.Unpriced, tc.want)
		}
	}
	for body, param := range map[string]string{
		`{"input":"x","tools":[{"type":"function"},{"Type":"web_search"}]}`: "tools[1].Type",
		`{"input":"x","tools":[{"type":"function","type":"web_search"}]}`:   "tools[0].type",
		`{"input":"x","tools":[{"type":7}]}`:                                "tools[0].type",
		`{"input":"x","modalities":"audio"}`:                                "modalities",
		`{"input":"x","Modalities":["audio"]}`:                              "Modalities",
	} {
		var r Request
		err := r.Parse([]byte(body), Responses)
		if e, ok := err.(*Error); !ok || e.Param != param {
			t.Errorf("%s: %v, want a refusal of %s", body, err, param)
		}
	}
}
