module github.com/west-tunnel/west

go 1.26.8

require (
	github.com/coder/websocket v1.8.15 // indirect
	github.com/hashicorp/yamux v0.1.2 // indirect
	github.com/prometheus/client_golang v1.25.0 // indirect
	github.com/xtaci/smux v1.5.58 // indirect
	golang.org/x/sync v0.25.0 // indirect
)
