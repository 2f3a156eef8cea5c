// Package azuretest gives the azure target's tests the real parts they talk
// to: a test certificate authority (the Azure SDK refuses bearer tokens over
// plain HTTP, so everything is HTTPS on loopback, trusted through the CA's
// pool in process or SSL_CERT_FILE in a child process) and Azurite, the Azure
// Storage emulator, serving blobs over HTTPS with OAuth checking.
//
// A missing azurite-blob fails the test: CI must never pass by skipping.
// `make test-deps` installs it (scripts/ensure-azurite.sh: npm install -g
// azurite).
package azuretest
