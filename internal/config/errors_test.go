package config

import (
	"errors"
	"strings"
	"testing"
)

// badTests are configs that must fail: at path, with a message holding
// msg. Every message says what was wanted, so each also holds "want".
var badTests = []struct {
	name string
	js   string
	path string
	msg  string
}{
	// The document.
	{"empty", ``, "", "want a JSON object, got empty input"},
	{"array", `[]`, "", `want a JSON object with "west" and optional "wsts", "wstc" and "proxy", got an array`},
	{"string", `"west"`, "", `got string "west"`},
	{"unknown top key", wrap(`"wstx": {}`), "wstx", `unknown key; want "west", "wsts", "wstc" or "proxy"`},
	{"no west", `{"wsts": {}}`, "west", `missing; want an object with at least "nm"`},
	{"duplicate top key", `{"west": {"nm": "a"}, "west": {"nm": "b"}}`, "west", "duplicate key; want each key once per object"},
	{"duplicate nested key", `{"west": {"nm": "a", "nm": "b"}}`, "west.nm", "duplicate key"},
	{"duplicate route", serverWrap(`"proxy": {"http://127.0.0.1:9911": {"en": "p", "/px": {"ou": "http://h"}, "/px": {"ou": "http://h"}}}`),
		`proxy["http://127.0.0.1:9911"]["/px"]`, "duplicate key"},
	{"deep nesting", `{"west": {"nm": "a", "control_ca": ` + strings.Repeat("[", 40) + strings.Repeat("]", 40) + `}}`,
		"west.control_ca" + strings.Repeat("[0]", 30), "want at most 32 levels of nesting"},

	// west
	{"west not object", `{"west": "a"}`, "west", `want an object with "nm" and optional "cp", got string "a"`},
	{"west null", `{"west": null}`, "west", "got null"},
	{"nm missing", `{"west": {}}`, "west.nm", `missing; want the node's name`},
	{"nm number", `{"west": {"nm": 1}}`, "west.nm", "want a name (a non-empty string), got number 1"},
	{"nm empty", `{"west": {"nm": ""}}`, "west.nm", "want a non-empty name, got an empty string"},
	{"nm spaces", `{"west": {"nm": " a"}}`, "west.nm", `want a name without surrounding white space, got " a"`},
	{"nm newline", `{"west": {"nm": "a\nb"}}`, "west.nm", `want a name without control characters, got "a\nb"`},
	{"west unknown key", `{"west": {"nm": "a", "nmm": "b"}}`, "west.nmm", `unknown key; want "nm", "cp", "control_ca", "dial_allow", "keepalive", "dead_after", "shutdown_grace" or "stream_window"`},
	{"cp no colon", `{"west": {"nm": "a", "cp": "9701"}}`, "west.cp", `want host:port or ":port", such as ":9701", got "9701": missing port in address`},
	{"cp number", `{"west": {"nm": "a", "cp": 9701}}`, "west.cp", `want a control port address such as ":9701", got number 9701`},
	{"cp big port", `{"west": {"nm": "a", "cp": ":65536"}}`, "west.cp", `got ":65536": port "65536" is not a number 0-65535`},
	{"cp negative port", `{"west": {"nm": "a", "cp": ":-1"}}`, "west.cp", `port "-1" is not a number 0-65535`},
	{"cp name port", `{"west": {"nm": "a", "cp": ":http"}}`, "west.cp", `port "http" is not a number 0-65535`},
	{"cp empty", `{"west": {"nm": "a", "cp": ""}}`, "west.cp", `want host:port or ":port", such as ":9701", got ""`},
	{"cp bad host", `{"west": {"nm": "a", "cp": "a b:1"}}`, "west.cp", `bad host "a b"`},
	{"control_ca not list", `{"west": {"nm": "a", "control_ca": "127.0.0.1"}}`, "west.control_ca", `want a list of IP addresses and CIDR ranges, got string "127.0.0.1"`},
	{"control_ca number", `{"west": {"nm": "a", "control_ca": ["::1", 1]}}`, "west.control_ca[1]", "want a string, got number 1"},
	{"control_ca name", `{"west": {"nm": "a", "control_ca": ["peer"]}}`, "west.control_ca[0]", `want an IP address or CIDR range (peer names are not allowed here), got "peer"`},

	// wsts
	{"wsts not object", wrap(`"wsts": []`), "wsts", `want an object with "sp" and optional "ca", got an array`},
	{"wsts unknown key", wrap(`"wsts": {"sp": "ws://h", "ea": "x"}`), "wsts.ea", `unknown key; want "sp", "ca", "tls_cert_file", "tls_key_file", "client_ca_file", "cert_names", "tokens" or "max_streams"`},
	{"ca without sp", wrap(`"wsts": {"ca": ["127.0.0.1"]}`), "wsts.ca", `want "sp" beside "ca"`},
	{"sp number", wrap(`"wsts": {"sp": 9801}`), "wsts.sp", "want a ws:// or wss:// URL to listen on, such as \"ws://127.0.0.1:9801\", got number 9801"},
	{"sp http", wrap(`"wsts": {"sp": "http://h"}`), "wsts.sp", `got "http://h": scheme "http" is not allowed here`},
	{"sp no scheme", wrap(`"wsts": {"sp": "127.0.0.1:9801"}`), "wsts.sp", `got "127.0.0.1:9801": first path segment in URL cannot contain colon`},
	{"sp no host", wrap(`"wsts": {"sp": "ws://"}`), "wsts.sp", `got "ws://": no host`},
	{"sp opaque", wrap(`"wsts": {"sp": "ws:h"}`), "wsts.sp", `got "ws:h": no host`},
	{"sp big port", wrap(`"wsts": {"sp": "ws://h:70000"}`), "wsts.sp", `port "70000" is not a number 0-65535`},
	{"sp bad port", wrap(`"wsts": {"sp": "ws://h:x"}`), "wsts.sp", `invalid port ":x" after host`},
	{"sp query", wrap(`"wsts": {"sp": "ws://h/?x=1"}`), "wsts.sp", "a query is not allowed"},
	{"sp fragment", wrap(`"wsts": {"sp": "ws://h/#f"}`), "wsts.sp", "a fragment is not allowed"},
	{"sp user", wrap(`"wsts": {"sp": "ws://u:p@h"}`), "wsts.sp", "user information is not allowed"},
	{"sp dirty path", wrap(`"wsts": {"sp": "ws://h/a/../b"}`), "wsts.sp", `path "/a/../b" is not a clean path of plain URL characters`},
	{"sp escaped path", wrap(`"wsts": {"sp": "ws://h/a%20b"}`), "wsts.sp", `path "/a%20b" is not a clean path`},
	{"sp braces", wrap(`"wsts": {"sp": "ws://h/{x}"}`), "wsts.sp", `path "/%7Bx%7D" is not a clean path`},
	{"sp bad host", wrap(`"wsts": {"sp": "ws://a_b!:1"}`), "wsts.sp", `got "ws://a_b!:1"`},
	{"wsts ca bad", wrap(`"wsts": {"sp": "ws://h", "ca": ["::1", "10.0.0.256"]}`), "wsts.ca[1]", `want an IP address, got "10.0.0.256": IPv4 field has value >255`},
	{"wsts ca empty entry", wrap(`"wsts": {"sp": "ws://h", "ca": [""]}`), "wsts.ca[0]", "want an IP address, CIDR range or peer name, got an empty string"},

	// wstc
	{"wstc not object", wrap(`"wstc": ["ws://h"]`), "wstc", "want an object whose keys are tunnel server URLs, got an array"},
	{"wstc http key", wrap(`"wstc": {"http://h": {}}`), `wstc["http://h"]`, `want a ws:// or wss:// URL of a tunnel server as the key, got "http://h": scheme "http" is not allowed here`},
	{"wstc port 0", wrap(`"wstc": {"ws://h:0": {}}`), `wstc["ws://h:0"]`, "port 0 is only for listening"},
	{"wstc empty host", wrap(`"wstc": {"ws://:80": {}}`), `wstc["ws://:80"]`, "no host"},
	{"wstc value", wrap(`"wstc": {"ws://h": "yes"}`), `wstc["ws://h"]`, `want an object with optional "nm" and "ee", got string "yes"`},
	{"ee number", wrap(`"wstc": {"ws://127.0.0.1:9801": {"ee": 1}}`), `wstc["ws://127.0.0.1:9801"].ee`, `want "yes" or "no", got number 1`},
	{"ee bool", wrap(`"wstc": {"ws://127.0.0.1:9801": {"ee": true}}`), `wstc["ws://127.0.0.1:9801"].ee`, `want "yes" or "no", got true`},
	{"ee maybe", wrap(`"wstc": {"ws://127.0.0.1:9801": {"ee": "Yes"}}`), `wstc["ws://127.0.0.1:9801"].ee`, `want "yes" or "no", got "Yes"`},
	{"wstc nm empty", wrap(`"wstc": {"ws://h": {"nm": ""}}`), `wstc["ws://h"].nm`, "want a non-empty name"},
	{"wstc unknown key", wrap(`"wstc": {"ws://h": {"ea": "x"}}`), `wstc["ws://h"].ea`, `unknown key; want "nm", "ee", "token", "ca_file", "server_name", "cert_file", "key_file" or "max_streams"`},
	{"wstc max_streams zero", wrap(`"wstc": {"ws://h": {"max_streams": 0}}`), `wstc["ws://h"].max_streams`, `want a whole number above zero, got 0`},
	{"wstc max_streams string", wrap(`"wstc": {"ws://h": {"max_streams": "9000"}}`), `wstc["ws://h"].max_streams`, `want a whole number above zero, got string "9000"`},
	{"server_name with port", wrap(`"wstc": {"wss://h": {"server_name": "t.example:9443"}}`), `wstc["wss://h"].server_name`, `want a host name (or address) the server's certificate is for, without scheme or port, got "t.example:9443"`},
	{"server_name URL", wrap(`"wstc": {"wss://h": {"server_name": "wss://t.example"}}`), `wstc["wss://h"].server_name`, `without scheme or port, got "wss://t.example"`},
	{"wstc same server", wrap(`"wstc": {"ws://h": {}, "WS://H:80/": {}}`), `wstc["WS://H:80/"]`, `want each tunnel server once, got the same server as wstc["ws://h"]`},

	// proxy keys
	{"proxy not object", wrap(`"proxy": []`), "proxy", "want an object whose keys are listen URLs, got an array"},
	{"proxy https", wrap(`"proxy": {"https://h:1": {}}`), `proxy["https://h:1"]`, `want a listen URL such as "http://127.0.0.1:9911", "tcp://127.0.0.1:2222" or "udp://127.0.0.1:5353" as the key, got "https://h:1": scheme "https" is not allowed here`},
	{"proxy path", wrap(`"proxy": {"http://h:1/px": {}}`), `proxy["http://h:1/px"]`, "only a scheme, host and port are allowed"},
	{"proxy query", wrap(`"proxy": {"http://h:1?a": {}}`), `proxy["http://h:1?a"]`, "only a scheme, host and port are allowed"},
	{"proxy no host", wrap(`"proxy": {"http://": {}}`), `proxy["http://"]`, "no host"},
	{"proxy big port", wrap(`"proxy": {"http://h:99999": {}}`), `proxy["http://h:99999"]`, `port "99999" is not a number 0-65535`},
	{"tcp no port", wrap(`"proxy": {"tcp://127.0.0.1": {}}`), `proxy["tcp://127.0.0.1"]`, "a tcp:// listener needs a port"},
	{"proxy value", wrap(`"proxy": {"http://h:1": "ws://h"}`), `proxy["http://h:1"]`, `want an object with "en" or "ea", got string "ws://h"`},

	// proxy en, ea, timeout
	{"en and ea without a server", wrap(`"proxy": {"http://h:1": {"en": "p", "ea": "ws://h", "/": {"ou": "http://h"}}}`), `proxy["http://h:1"]`, `want exactly one of "en" or "ea", got both`},
	{"en and ea", serverWrap(`"proxy": {"http://h:1": {"en": "p", "ea": "ws://h", "/": {"ou": "http://h"}}}`), `proxy["http://h:1"]`, `want exactly one of "en" or "ea", got both`},
	{"neither en nor ea", wrap(`"proxy": {"http://h:1": {"/": {"ou": "http://h"}}}`), `proxy["http://h:1"]`, `want "en" (the name of a peer that connects to our tunnel server) or "ea" (the URL of a tunnel server to dial), got neither`},
	{"en empty", serverWrap(`"proxy": {"http://h:1": {"en": "", "/": {"ou": "http://h"}}}`), `proxy["http://h:1"].en`, "want a non-empty name, got an empty string"},
	{"en number", serverWrap(`"proxy": {"http://h:1": {"en": 5, "/": {"ou": "http://h"}}}`), `proxy["http://h:1"].en`, "want a name (a non-empty string), got number 5"},
	{"en without server", wrap(`"proxy": {"http://h:1": {"en": "p", "/": {"ou": "http://h"}}}`), `proxy["http://h:1"].en`, `want a tunnel server for peer "p" to connect to, got no "wsts.sp"`},
	{"ea http", wrap(`"proxy": {"http://h:1": {"ea": "http://h", "/": {"ou": "http://h"}}}`), `proxy["http://h:1"].ea`, `want a ws:// or wss:// URL of a tunnel server, such as "ws://127.0.0.1:9801", got "http://h": scheme "http" is not allowed here`},
	{"ea list", wrap(`"proxy": {"http://h:1": {"ea": ["ws://h"], "/": {"ou": "http://h"}}}`), `proxy["http://h:1"].ea`, "got an array"},
	{"timeout bad", wrap(`"proxy": {"http://h:1": {"ea": "ws://h", "timeout": "90", "/": {"ou": "http://h"}}}`), `proxy["http://h:1"].timeout`, `want a duration such as "90s" or "2m", got "90"`},
	{"timeout number", wrap(`"proxy": {"http://h:1": {"ea": "ws://h", "timeout": 90, "/": {"ou": "http://h"}}}`), `proxy["http://h:1"].timeout`, `want a duration such as "90s" or "2m", got number 90`},
	{"timeout zero", wrap(`"proxy": {"http://h:1": {"ea": "ws://h", "timeout": "0s", "/": {"ou": "http://h"}}}`), `proxy["http://h:1"].timeout`, `want a duration above zero, got "0s"`},
	{"timeout negative", wrap(`"proxy": {"http://h:1": {"ea": "ws://h", "timeout": "-1s", "/": {"ou": "http://h"}}}`), `proxy["http://h:1"].timeout`, `want a duration above zero, got "-1s"`},

	// http routes
	{"no routes", wrap(`"proxy": {"http://h:1": {"ea": "ws://h"}}`), `proxy["http://h:1"]`, `want at least one route, a key such as "/" holding {"ou": "http://..."}, got none`},
	{"http unknown key", wrap(`"proxy": {"http://h:1": {"ea": "ws://h", "px": {"ou": "http://h"}}}`), `proxy["http://h:1"].px`, `unknown key; want "en", "ea", "timeout", "tls_ca_file", "max_conns", "error_detail" or a path starting with "/"`},
	{"http ou outside route", wrap(`"proxy": {"http://h:1": {"ea": "ws://h", "ou": "http://h"}}`), `proxy["http://h:1"].ou`, `"ou" goes inside a path key such as "/"; want "en", "ea", "timeout", "tls_ca_file", "max_conns", "error_detail" or a path starting with "/"`},
	{"route not object", wrap(`"proxy": {"http://h:1": {"ea": "ws://h", "/px": "http://h"}}`), `proxy["http://h:1"]["/px"]`, `want an object with "ou" and optional "ca", got string "http://h"`},
	{"route bad path", wrap(`"proxy": {"http://h:1": {"ea": "ws://h", "/a b": {"ou": "http://h"}}}`), `proxy["http://h:1"]["/a b"]`, `want a path of URL characters and %XX escapes, got "/a b"`},
	{"route bad escape", wrap(`"proxy": {"http://h:1": {"ea": "ws://h", "/a%zz": {"ou": "http://h"}}}`), `proxy["http://h:1"]["/a%zz"]`, "want a path of URL characters"},
	{"route query", wrap(`"proxy": {"http://h:1": {"ea": "ws://h", "/a?b": {"ou": "http://h"}}}`), `proxy["http://h:1"]["/a?b"]`, "want a path of URL characters"},
	{"route no ou", wrap(`"proxy": {"http://h:1": {"ea": "ws://h", "/px": {}}}`), `proxy["http://h:1"]["/px"].ou`, `missing; want the outgoing URL, such as "http://127.0.0.1:9921/x"`},
	{"route unknown key", wrap(`"proxy": {"http://h:1": {"ea": "ws://h", "/px": {"ou": "http://h", "uo": "x"}}}`), `proxy["http://h:1"]["/px"].uo`, `unknown key; want "ou" or "ca"`},
	{"ou number", wrap(`"proxy": {"http://127.0.0.1:9911": {"ea": "ws://h", "/px": {"ou": 1}}}`), `proxy["http://127.0.0.1:9911"]["/px"].ou`, `want an http:// or https:// URL such as "http://127.0.0.1:9921/x", got number 1`},
	{"ou ws", wrap(`"proxy": {"http://h:1": {"ea": "ws://h", "/px": {"ou": "ws://h"}}}`), `proxy["http://h:1"]["/px"].ou`, `got "ws://h": scheme "ws" is not allowed here`},
	{"ou relative", wrap(`"proxy": {"http://h:1": {"ea": "ws://h", "/px": {"ou": "/x"}}}`), `proxy["http://h:1"]["/px"].ou`, `got "/x": no scheme`},
	{"ou no host", wrap(`"proxy": {"http://h:1": {"ea": "ws://h", "/px": {"ou": "http:///x"}}}`), `proxy["http://h:1"]["/px"].ou`, "no host"},
	{"ou port 0", wrap(`"proxy": {"http://h:1": {"ea": "ws://h", "/px": {"ou": "http://h:0/x"}}}`), `proxy["http://h:1"]["/px"].ou`, "port 0 is only for listening"},
	{"route ca name", wrap(`"proxy": {"http://h:1": {"ea": "ws://h", "/px": {"ou": "http://h", "ca": ["127.0.0.1", "peer"]}}}`), `proxy["http://h:1"]["/px"].ca[1]`, `want an IP address or CIDR range (peer names are not allowed here), got "peer"`},
	{"route ca cidr", wrap(`"proxy": {"http://h:1": {"ea": "ws://h", "/px": {"ou": "http://h", "ca": ["10.0.0.0/33"]}}}`), `proxy["http://h:1"]["/px"].ca[0]`, `want a CIDR range, got "10.0.0.0/33": prefix length out of range`},

	// tcp
	{"tcp no ou", wrap(`"proxy": {"tcp://h:1": {"ea": "ws://h"}}`), `proxy["tcp://h:1"].ou`, "missing; want a tcp://host:port URL to connect to"},
	{"tcp ou no port", wrap(`"proxy": {"tcp://h:1": {"ea": "ws://h", "ou": "tcp://h"}}`), `proxy["tcp://h:1"].ou`, `want a tcp://host:port URL to connect to, got "tcp://h": no port`},
	{"tcp ou path", wrap(`"proxy": {"tcp://h:1": {"ea": "ws://h", "ou": "tcp://h:2/x"}}`), `proxy["tcp://h:1"].ou`, "only a scheme, host and port are allowed"},
	{"tcp ou http", wrap(`"proxy": {"tcp://h:1": {"ea": "ws://h", "ou": "http://h:2"}}`), `proxy["tcp://h:1"].ou`, `scheme "http" is not allowed here`},
	{"tcp path key", wrap(`"proxy": {"tcp://h:1": {"ea": "ws://h", "ou": "tcp://h:2", "/x": {"ou": "http://h"}}}`), `proxy["tcp://h:1"]["/x"]`, `unknown key for a tcp:// listener, which has no paths; want "en", "ea", "ou", "ca" or "max_conns"`},
	{"tcp timeout", wrap(`"proxy": {"tcp://h:1": {"ea": "ws://h", "ou": "tcp://h:2", "timeout": "1s"}}`), `proxy["tcp://h:1"].timeout`, `unknown key for a tcp:// listener, since timeout bounds HTTP responses; want "en", "ea", "ou", "ca" or "max_conns"`},
	{"tcp error_detail", wrap(`"proxy": {"tcp://h:1": {"ea": "ws://h", "ou": "tcp://h:2", "error_detail": "no"}}`), `proxy["tcp://h:1"].error_detail`, `unknown key for a tcp:// listener, which answers no errors of its own; want "en", "ea", "ou", "ca" or "max_conns"`},
	{"http error_detail not yes or no", wrap(`"proxy": {"http://h:1": {"ea": "ws://h", "error_detail": "brief", "/": {"ou": "http://h"}}}`), `proxy["http://h:1"].error_detail`, `want "yes" or "no", got "brief"`},
	{"tcp unknown key", wrap(`"proxy": {"tcp://h:1": {"ea": "ws://h", "ou": "tcp://h:2", "x": 1}}`), `proxy["tcp://h:1"].x`, `unknown key; want "en", "ea", "ou", "ca" or "max_conns"`},
	{"udp no port", wrap(`"proxy": {"udp://h": {"ea": "ws://h", "ou": "udp://h:2"}}`), `proxy["udp://h"]`, `a udp:// listener needs a port`},
	{"udp ou tcp", wrap(`"proxy": {"udp://h:1": {"ea": "ws://h", "ou": "tcp://h:2"}}`), `proxy["udp://h:1"].ou`, `want a udp://host:port URL to connect to, got "tcp://h:2": scheme "tcp" is not allowed here`},
	{"udp no ou", wrap(`"proxy": {"udp://h:1": {"ea": "ws://h"}}`), `proxy["udp://h:1"].ou`, `missing; want a udp://host:port URL to connect to`},
	{"udp max_conns zero", wrap(`"proxy": {"udp://h:1": {"ea": "ws://h", "ou": "udp://h:2", "max_conns": 0}}`), `proxy["udp://h:1"].max_conns`, `want a whole number above zero, got 0`},
	// security, reliability and limit keys
	{"keepalive bad", `{"west": {"nm": "a", "keepalive": "5"}}`, "west.keepalive", `want a duration such as "90s" or "2m", got "5"`},
	{"keepalive tiny", `{"west": {"nm": "a", "keepalive": "1ns"}}`, "west.keepalive", `want at least 100ms, got 1ns`},
	{"dead_after tiny", `{"west": {"nm": "a", "dead_after": "2ns"}}`, "west.dead_after", `want at least 300ms, got 2ns`},
	{"dead_after not above keepalive", `{"west": {"nm": "a", "keepalive": "5s", "dead_after": "5s"}}`, "west.dead_after", `want a duration longer than keepalive (5s), got 5s`},
	{"stream_window number", `{"west": {"nm": "a", "stream_window": 1048576}}`, "west.stream_window", `want a size from "256KiB" to "1GiB", a whole number of KiB, MiB or GiB such as "4MiB", got number 1048576`},
	{"stream_window MB", `{"west": {"nm": "a", "stream_window": "4MB"}}`, "west.stream_window", `want a size from "256KiB" to "1GiB", a whole number of KiB, MiB or GiB such as "4MiB", got "4MB"`},
	{"stream_window no unit", `{"west": {"nm": "a", "stream_window": "4194304"}}`, "west.stream_window", `want a size from "256KiB" to "1GiB", a whole number of KiB, MiB or GiB such as "4MiB", got "4194304"`},
	{"stream_window fraction", `{"west": {"nm": "a", "stream_window": "1.5MiB"}}`, "west.stream_window", `want a size from "256KiB" to "1GiB", a whole number of KiB, MiB or GiB such as "4MiB", got "1.5MiB"`},
	{"stream_window space", `{"west": {"nm": "a", "stream_window": "4 MiB"}}`, "west.stream_window", `want a size from "256KiB" to "1GiB", a whole number of KiB, MiB or GiB such as "4MiB", got "4 MiB"`},
	{"stream_window negative", `{"west": {"nm": "a", "stream_window": "-4MiB"}}`, "west.stream_window", `want a size from "256KiB" to "1GiB", a whole number of KiB, MiB or GiB such as "4MiB", got "-4MiB"`},
	{"stream_window bare unit", `{"west": {"nm": "a", "stream_window": "MiB"}}`, "west.stream_window", `want a size from "256KiB" to "1GiB", a whole number of KiB, MiB or GiB such as "4MiB", got "MiB"`},
	{"stream_window below", `{"west": {"nm": "a", "stream_window": "255KiB"}}`, "west.stream_window", `want a size from "256KiB" to "1GiB", a whole number of KiB, MiB or GiB such as "4MiB", got "255KiB"`},
	{"stream_window zero", `{"west": {"nm": "a", "stream_window": "0GiB"}}`, "west.stream_window", `want a size from "256KiB" to "1GiB", a whole number of KiB, MiB or GiB such as "4MiB", got "0GiB"`},
	{"stream_window above", `{"west": {"nm": "a", "stream_window": "1025MiB"}}`, "west.stream_window", `want a size from "256KiB" to "1GiB", a whole number of KiB, MiB or GiB such as "4MiB", got "1025MiB"`},
	{"stream_window huge", `{"west": {"nm": "a", "stream_window": "99999999999999999999GiB"}}`, "west.stream_window", `want a size from "256KiB" to "1GiB", a whole number of KiB, MiB or GiB such as "4MiB", got "99999999999999999999GiB"`},
	{"dial_allow not list", `{"west": {"nm": "a", "dial_allow": "10.0.0.0/8"}}`, "west.dial_allow", `want a list of targets such as "10.0.0.0/8", "db.internal:5432" or "*.example.org:443", got string "10.0.0.0/8"`},
	{"dial_allow bad port", `{"west": {"nm": "a", "dial_allow": ["db:99999"]}}`, "west.dial_allow[0]", `want a port from 1 to 65535 or *, got "99999" in "db:99999"`},
	{"wss without cert", wrap(`"wsts": {"sp": "wss://h"}`), "wsts", `want "tls_cert_file" and "tls_key_file" for a wss:// server, got no "tls_cert_file" and no "tls_key_file"`},
	{"wss without key", wrap(`"wsts": {"sp": "wss://h", "tls_cert_file": "c"}`), "wsts", `want "tls_cert_file" and "tls_key_file" for a wss:// server, got no "tls_key_file"`},
	{"ws with cert", wrap(`"wsts": {"sp": "ws://h", "tls_cert_file": "c", "tls_key_file": "k"}`), "wsts.sp", `want a wss:// URL, since TLS files are given; got "ws://h"`},
	{"cert_names without client ca", wrap(`"wsts": {"sp": "wss://h", "tls_cert_file": "c", "tls_key_file": "k", "cert_names": "yes"}`), "wsts.cert_names", `want "client_ca_file" beside it, since names are bound to client certificates`},
	{"tokens without sp", wrap(`"wsts": {"tokens": {"a": "env:A"}}`), "wsts.tokens", `want "sp" beside "tokens", since it configures a tunnel server; got no "sp"`},
	{"token literal", wrap(`"wsts": {"sp": "ws://h", "tokens": {"a": "hunter2"}}`), `wsts.tokens.a`, `want "env:NAME" or "file:PATH", where the secret is kept, got a string of 7 characters without either prefix`},
	{"tokens empty", wrap(`"wsts": {"sp": "ws://h", "tokens": {}}`), `wsts.tokens`, `want at least one peer name, got an empty object`},
	{"max_streams zero", wrap(`"wsts": {"sp": "ws://h", "max_streams": 0}`), `wsts.max_streams`, `want a whole number above zero, got 0`},
	{"max_streams fraction", wrap(`"wsts": {"sp": "ws://h", "max_streams": 1.5}`), `wsts.max_streams`, `want a whole number above zero, got 1.5`},
	{"wstc token env empty", wrap(`"wstc": {"ws://h": {"token": "env:"}}`), `wstc["ws://h"].token`, `want "env:NAME" or "file:PATH", where the secret is kept, got a string of 4 characters without either prefix`},
	{"wstc ca_file on ws", wrap(`"wstc": {"ws://h": {"ca_file": "ca.pem"}}`), `wstc["ws://h"]`, `want a wss:// server URL for TLS settings, got "ws://h"`},
	{"wstc cert without key", wrap(`"wstc": {"wss://h": {"cert_file": "c.pem"}}`), `wstc["wss://h"]`, `want both "cert_file" and "key_file" or neither, got no "key_file"`},
	{"max_conns negative", wrap(`"proxy": {"tcp://h:1": {"ea": "ws://h", "ou": "tcp://h:2", "max_conns": -1}}`), `proxy["tcp://h:1"].max_conns`, `want a whole number above zero, got -1`},
	{"tls_ca_file empty", wrap(`"proxy": {"http://h:1": {"ea": "ws://h", "tls_ca_file": "", "/": {"ou": "https://h"}}}`), `proxy["http://h:1"].tls_ca_file`, `want a file name, got an empty string`},
	{"tcp ca", wrap(`"proxy": {"tcp://h:1": {"ea": "ws://h", "ou": "tcp://h:2", "ca": ["ws://peer"]}}`), `proxy["tcp://h:1"].ca[0]`, "peer names are not allowed here"},

	// listen addresses
	{"two proxies one addr", wrap(`"proxy": {
		"http://127.0.0.1:9911": {"ea": "ws://h", "/": {"ou": "http://h"}},
		"http://127.0.0.1:9911/": {"ea": "ws://h", "/": {"ou": "http://h"}}}`),
		`proxy["http://127.0.0.1:9911/"]`, `want a listen address of its own, got 127.0.0.1:9911, which proxy["http://127.0.0.1:9911"] listens on too`},
	{"default port clash", wrap(`"proxy": {
		"http://LOCALHOST": {"ea": "ws://h", "/": {"ou": "http://h"}},
		"tcp://localhost:18889": {"ea": "ws://h", "ou": "tcp://h:1"}}`),
		`proxy["tcp://localhost:18889"]`, `got localhost:18889, which proxy["http://LOCALHOST"] listens on too`},
	{"proxy on cp", `{"west": {"nm": "a", "cp": "127.0.0.1:9911"}, "proxy": {"http://127.0.0.1:9911": {"ea": "ws://h", "/": {"ou": "http://h"}}}}`,
		`proxy["http://127.0.0.1:9911"]`, "which west.cp listens on too"},
	{"sp on cp", `{"west": {"nm": "a", "cp": ":9801"}, "wsts": {"sp": "ws://:9801"}}`, "wsts.sp", "got :9801, which west.cp listens on too"},
	{"wildcards alike", `{"west": {"nm": "a", "cp": "0.0.0.0:9802"}, "wsts": {"sp": "ws://:9802"}}`, "wsts.sp", "got :9802, which west.cp listens on too"},
	{"v6 wildcard on v4 wildcard", `{"west": {"nm": "a", "cp": ":9803"}, "proxy": {"http://[::]:9803": {"ea": "ws://h", "/": {"ou": "http://h"}}}}`,
		`proxy["http://[::]:9803"]`, "got [::]:9803, which west.cp listens on too"},
	{"specific beside wildcard", `{"west": {"nm": "a", "cp": ":9805"}, "wsts": {"sp": "ws://127.0.0.1:9805"}}`,
		"wsts.sp", "got 127.0.0.1:9805, which west.cp listens on too"},
	{"wildcard beside specific", wrap(`"proxy": {
		"http://127.0.0.1:9806": {"ea": "ws://h", "/": {"ou": "http://h"}},
		"http://127.0.0.2:9806": {"ea": "ws://h", "/": {"ou": "http://h"}},
		"http://0.0.0.0:9806": {"ea": "ws://h", "/": {"ou": "http://h"}}}`),
		`proxy["http://0.0.0.0:9806"]`, `got 0.0.0.0:9806, which proxy["http://127.0.0.1:9806"] listens on too`},
	{"v6 loopback beside v4 wildcard", `{"west": {"nm": "a", "cp": "0.0.0.0:9807"}, "proxy": {"http://[::1]:9807": {"ea": "ws://h", "/": {"ou": "http://h"}}}}`,
		`proxy["http://[::1]:9807"]`, "got [::1]:9807, which west.cp listens on too"},
	{"v6 spelled two ways", `{"west": {"nm": "a", "cp": "[::1]:9808"}, "wsts": {"sp": "ws://[0::1]:9808"}}`,
		"wsts.sp", "got [0::1]:9808, which west.cp listens on too"},
	{"v6 wildcard spelled out", `{"west": {"nm": "a", "cp": "127.0.0.1:9809"}, "wsts": {"sp": "ws://[0:0:0:0:0:0:0:0]:9809"}}`,
		"wsts.sp", "got [0:0:0:0:0:0:0:0]:9809, which west.cp listens on too"},
	{"v4-mapped beside v4", `{"west": {"nm": "a", "cp": "127.0.0.1:9810"}, "wsts": {"sp": "ws://[::ffff:127.0.0.1]:9810"}}`,
		"wsts.sp", "got [::ffff:127.0.0.1]:9810, which west.cp listens on too"},
	{"udp beside udp wildcard", wrap(`"proxy": {
		"udp://:5353": {"ea": "ws://h", "ou": "udp://h:53"},
		"udp://127.0.0.1:5353": {"ea": "ws://h", "ou": "udp://h:53"}}`),
		`proxy["udp://127.0.0.1:5353"]`, `got 127.0.0.1:5353, which proxy["udp://:5353"] listens on too`},
	{"same url port 0", wrap(`"proxy": {
		"http://127.0.0.1:0": {"ea": "ws://h", "/": {"ou": "http://h"}},
		"HTTP://127.0.0.1:0": {"ea": "ws://h", "/": {"ou": "http://h"}}}`),
		`proxy["HTTP://127.0.0.1:0"]`, `want each listener once, got the same URL as proxy["http://127.0.0.1:0"]`},
}

func TestParseErrors(t *testing.T) {
	for _, tt := range badTests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse([]byte(tt.js))
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("Parse = %+v, %v; want an *Error\n%s", c, err, tt.js)
			}
			if ce.Path != tt.path || !strings.Contains(ce.Msg, tt.msg) || !strings.Contains(ce.Msg, "want") {
				t.Errorf("got  path %s msg %q\nwant path %s msg containing %q", ce.Path, ce.Msg, tt.path, tt.msg)
			}
			want := "config: " + ce.Msg
			if ce.Path != "" {
				want = "config: " + ce.Path + ": " + ce.Msg
			}
			if err.Error() != want {
				t.Errorf("Error() = %q, want %q", err, want)
			}
		})
	}
}

func TestSyntaxErrors(t *testing.T) {
	tests := []struct {
		js        string
		line, col int
		msg       string
	}{
		{`{"west": {"nm": "a"},}`, 1, 22, `invalid JSON: invalid character '}' looking for beginning of object key string`},
		{"{\n  \"west\": x\n}", 2, 11, `invalid JSON: invalid character 'x' looking for beginning of value`},
		{"{\n  \"west\": {\"nm\": \"é\" \"cp\": \"\"}}", 2, 22, `invalid JSON: invalid character '"' after object key:value pair`},
		{`{"west": {"nm": "a"}`, 1, 21, "invalid JSON: unexpected end of input"},
		{"{\"west\": {\"nm\": \"a\"}}\n {}", 2, 2, "invalid JSON: unexpected data after the top-level value"},
		{`{"west": {"nm": "a"}}}`, 1, 22, "invalid JSON: invalid character '}' looking for beginning of value"},
		{`{"west": {"nm": tru}}`, 1, 17, "invalid JSON: invalid character '}' in literal true (expecting 'e')"},
		{`{"west": {"nm": "\x"}}`, 1, 17, `invalid JSON: invalid character 'x' in string escape code`},
	}
	for _, tt := range tests {
		_, err := Parse([]byte(tt.js))
		var ce *Error
		if !errors.As(err, &ce) {
			t.Errorf("Parse(%q) = %v, want an *Error", tt.js, err)
			continue
		}
		if ce.Path != "" || ce.Line != tt.line || ce.Column != tt.col || ce.Msg != tt.msg {
			t.Errorf("Parse(%q):\ngot  %q line %d col %d %q\nwant line %d col %d %q", tt.js, ce.Path, ce.Line, ce.Column, ce.Msg, tt.line, tt.col, tt.msg)
		}
	}
}
