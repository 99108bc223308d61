// Package control serves west's control port: the seed's four-section
// text dump with live fields, the same as JSON, Prometheus metrics and a
// health check. It imports neither tunnel nor proxy: the composition root
// (internal/node) hands it a State through a Source, and feeds the Metrics
// from its hooks, so its tests run on fake state.
//
// It imports internal/config (for the seed-format rendering), the standard
// library and the Prometheus client; only internal/node imports it. The
// handler only reads, but for POST /api/reload, which it refuses to a
// browser page of another site.
package control
