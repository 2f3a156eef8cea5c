// Package httpapi serves the OBS cloud upload API over HTTP: the public
// routes a build-service frontend calls (create, list, show, log, kill,
// public key, hello) and the internal routes an OBS source server calls on
// an upload server (POST of a job skeleton, PUT of the image). It only
// translates: requests become calls on a Manager (backend.Manager), and its
// results and errors become OBS's XML documents (package xmlapi).
//
// Credentials: with Config.Token (--token-file) every POST and PUT needs
// that bearer token, unrestricted. With Config.Clients (--clients) a POST
// or PUT may instead carry a client's token; the client's scope (target,
// user, and the mirror target data's tree and series, the only target
// fields the daemon reads) is checked before the job is created, a refusal
// answers 403 naming what was refused, and the job records the client
// (Job.Client). A client PUTs and kills only its own jobs. See clients.go.
//
// Errors are answered as OBS did: the HTTP status line carries the
// person-readable summary ("404 no such job"), the body is a <status>
// document, and internal errors show only "internal error" (the real cause
// is logged).
//
// Memory is bounded whatever clients send: bodies are capped before they
// are buffered (MaxTargetData, MaxSkeleton), buffered bodies share a byte
// budget (Config.MaxBuffered, 503 when it stays full), and PUTs streaming
// at once are bounded (Config.MaxReceives). Connections and headers are
// bounded by the http.Server and listener the command sets up.
//
// The job and the list carry a strong ETag and answer If-None-Match with
// 304 (etag.go). Beside OBS's routes it serves, for people and operators,
// the dashboard at /ui/ (ui.go, files embedded from ui/) and Prometheus
// metrics at /metrics (metrics.go); requests are counted by route template.
package httpapi
