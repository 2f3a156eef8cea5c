// Package httpapi serves the OBS cloud upload API over HTTP: the public
// routes a build-service frontend calls (create, list, show, log, kill,
// public key, hello) and the internal routes an OBS source server calls on
// an upload server (POST of a job skeleton, PUT of the image). It only
// translates: requests become calls on a Manager (backend.Manager), and its
// results and errors become OBS's XML documents (package xmlapi).
//
// Errors are answered as OBS did: the HTTP status line carries the
// person-readable summary ("404 no such job"), the body is a <status>
// document, and internal errors show only "internal error" (the real cause
// is logged).
//
// The job and the list carry a strong ETag and answer If-None-Match with
// 304 (etag.go). Beside OBS's routes it serves, for people and operators,
// the dashboard at /ui/ (ui.go, files embedded from ui/) and Prometheus
// metrics at /metrics (metrics.go); requests are counted by route template.
package httpapi
