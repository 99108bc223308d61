package config

import (
	"testing"
	"time"
)

// TestRenderObjectsAreFresh: RenderObjects hands out new maps each time,
// so that the control port can add its live fields to them.
func TestRenderObjectsAreFresh(t *testing.T) {
	c := mustParse(t, `{"west": {"nm": "a"}}`)
	_, _, wstc, _ := c.RenderObjects()
	wstc["ws://other"] = map[string]any{}
	if _, _, wstc, _ := c.RenderObjects(); len(wstc) != 0 {
		t.Errorf("RenderObjects shares its maps between calls")
	}
}

func TestRenderSections(t *testing.T) {
	type state struct {
		State string `json:"state"`
		Since int    `json:"since"`
	}
	west := map[string]any{
		"nm":      "a<b>&c",
		"live":    true,
		"none":    nil,
		"uptime":  (90 * time.Second).String(),
		"streams": int64(3),
		"ratio":   0.5,
		"empty":   []any{},
		"peers":   []string{"x", "y"},
		"client":  state{"up", 12},
		"nested":  map[string]any{"b": 1, "a": map[string]any{}},
		"unicode": "é\u2028",
	}
	want := `--- west object ---
{
    "client":{
        "since":12,
        "state":"up"
    },
    "empty":[],
    "live":true,
    "nested":{
        "a":{},
        "b":1
    },
    "nm":"a<b>&c",
    "none":null,
    "peers":[
        "x",
        "y"
    ],
    "ratio":0.5,
    "streams":3,
    "unicode":"\u00e9\u2028",
    "uptime":"1m30s"
}
--- wsts object ---
{}
--- wstc object ---
{}
--- proxy object ---
{}
`
	if got := RenderSections(west, nil, map[string]any{}, nil); got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}
