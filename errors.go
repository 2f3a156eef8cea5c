package cloudupload

import (
	"errors"
	"fmt"
)

// Error codes, mapped once to HTTP statuses by the API layer.
const (
	EINVALID      = "invalid"      // bad input: 400
	ENOTFOUND     = "not found"    // 404
	EFORBIDDEN    = "forbidden"    // a known client asking beyond its scope: 403
	ECONFLICT     = "conflict"     // operation not allowed in the job's state: 400 (as OBS)
	ETOOLARGE     = "too large"    // body over its limit: 413
	EUNAUTHORIZED = "unauthorized" // missing or wrong bearer token: 401
	ENOSPACE      = "no space"     // the server's disk is full or below its free-space floor: 507
	EUNAVAILABLE  = "unavailable"  // a node of a cluster that holds the job cannot be reached: 503
	EINTERNAL     = "internal"     // anything else: 500, message not shown to clients
)

// Error is an error whose Message is written for the person calling the API.
// It never holds server paths or secrets; wrap internal causes in Err, which
// is logged but not shown.
type Error struct {
	Code    string
	Message string
	Err     error
}

func (e *Error) Error() string {
	if e.Err != nil {
		return e.Message + ": " + e.Err.Error()
	}
	return e.Message
}

func (e *Error) Unwrap() error { return e.Err }

// Errorf returns an *Error with the given code and a formatted message.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// ErrorCode returns the code of the first *Error in err's chain, EINTERNAL
// when there is none, "" for nil.
func ErrorCode(err error) string {
	var e *Error
	if err == nil {
		return ""
	} else if errors.As(err, &e) {
		return e.Code
	}
	return EINTERNAL
}

// ErrorMessage returns the person-readable message of err: that of the first
// *Error in its chain, or "internal error" for anything else, so internal
// details (paths, addresses) never reach a client.
func ErrorMessage(err error) string {
	var e *Error
	if err == nil {
		return ""
	} else if errors.As(err, &e) {
		return e.Message
	}
	return "internal error"
}
