// Package cloudupload holds the domain of the cloud upload server: the upload
// job, its state machine, the error type shared by every layer, and the name
// rules for what arrives from outside. It imports nothing from the rest of
// the project; the daemon (backend, xmlapi, cmd/cloudupload-server) and the
// uploader process (uploader, targets, cmd/clouduploader) both build on it.
package cloudupload
