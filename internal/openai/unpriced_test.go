package openai

import (
	"fmt"
	"slices"
	"strings"
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
		{Chat, `{"messages":[],"plugins":null}`, nil},
		{Chat, `{"messages":[],"plugins":[]}`, nil},
		{Chat, `{"messages":[],"plugins":[{"max_results":3,"\u0069d":"web"},{"id":"file-parser","pdf":{"engine":"mistral-ocr"}},{"id":"web"}]}`, []string{"plugin_web", "plugin_file-parser"}},
		{Chat, `{"messages":[],"plugins":[{"engine":"exa"},"web"]}`, []string{"plugin"}},
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
		`{"input":"x","Plugins":[{"id":"web"}]}`:                            "Plugins",
		`{"input":"x","plugins":{"id":"web"}}`:                              "plugins",
		`{"input":"x","plugins":[{"id":"x"},{"Id":"web"}]}`:                 "plugins[1].Id",
		`{"input":"x","plugins":[{"id":"web","id":"x"}]}`:                   "plugins[0].id",
	} {
		var r Request
		err := r.Parse([]byte(body), Responses)
		if e, ok := err.(*Error); !ok || e.Param != param {
			t.Errorf("%s: %v, want a refusal of %s", body, err, param)
		}
	}
}

// TestUnpricedManyDistinct: past the few searched as a list, features are
// still kept once each, in the order first asked for.
func TestUnpricedManyDistinct(t *testing.T) {
	var b strings.Builder
	b.WriteString(`{"model":"m","messages":[{"role":"user","content":"x"}],"tools":[`)
	var want []string
	for i := range 3 * unpricedListMax {
		fmt.Fprintf(&b, `{"type":"hosted_%d"},{"type":"hosted_%d"},`, i, i/2)
		if !slices.Contains(want, fmt.Sprintf("hosted_%d", i)) {
			want = append(want, fmt.Sprintf("hosted_%d", i))
		}
	}
	b.WriteString(`{"type":"hosted_0"}],"plugins":[{"id":"web"},{"id":"web"}]}`)
	want = append(want, "plugin_web")
	var r Request
	if err := r.Parse([]byte(b.String()), Chat); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(r.Unpriced, want) {
		t.Errorf("Unpriced = %v, want %v", r.Unpriced, want)
	}
}
