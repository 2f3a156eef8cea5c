// Package human holds what the daemon, the shim and the uploader write
// for people alike. It imports only the standard library, so that the shim
// (a process for every job) stays small.
package human

import "time"

// Round shortens a duration for people: to the second above a minute, to
// a tenth of a second above a second, else to the millisecond.
func Round(d time.Duration) time.Duration {
	switch {
	case d > time.Minute:
		return d.Round(time.Second)
	case d > time.Second:
		return d.Round(100 * time.Millisecond)
	default:
		return d.Round(time.Millisecond)
	}
}
