package config

import (
	"testing"
	"time"
)

// seedDump is the control port output shown in the seed's README, for
// its use case 3 G.
const seedDump = `--- west object ---
{
    "addr":"",
    "cp":":9701",
    "nm":"ws://case3.G.fiap.org",
    "port":9701
}
--- wsts object ---
{
    "addr":"127.0.0.1",
    "port":9801,
    "sp":"ws://127.0.0.1:9801"
}
--- wstc object ---
{
    "ws://case3.L2.fiap.org":{
        "ee":"no",
        "nm":"ws://case3.G.fiap.org"
    }
}
--- proxy object ---
{
    "http://127.0.0.1:9961":{
        "/by":{
            "ou":"http://127.0.0.1:9971/b"
        },
        "addr":"127.0.0.1",
        "en":"ws://case3.L2.fiap.org",
        "port":9961
    }
}
`

// TestRenderSeedDump rebuilds the README's dump from the case 3 G sample,
// whose wstc section lists the peer of its "en" listener, as the seed's
// config check added it.
func TestRenderSeedDump(t *testing.T) {
	c := mustParse(t, `{
		"west": {"nm": "ws://case3.G.fiap.org", "cp": ":9701"},
		"wsts": {"sp": "ws://127.0.0.1:9801"},
		"wstc": {},
		"proxy": {"http://127.0.0.1:9961": {"en": "ws://case3.L2.fiap.org", "/by": {"ou": "http://127.0.0.1:9971/b"}}}
	}`)
	west, wsts, wstc, proxy := c.RenderObjects()
	if got := RenderSections(west, wsts, wstc, proxy); got != seedDump {
		t.Errorf("got\n%s\nwant\n%s", got, seedDump)
	}
	// RenderObjects hands out fresh maps, so a change does not stick.
	wstc["ws://other"] = map[string]any{}
	if _, _, wstc, _ := c.RenderObjects(); len(wstc) != 1 {
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
    "unicode":"é\u2028",
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
