// Package connlimit bounds the connections a listener has open at once, so
// that what each open connection costs (buffers, a goroutine, headers being
// read) stays bounded however many clients connect. The daemon's HTTP
// server listens through it (--max-connections).
package connlimit
