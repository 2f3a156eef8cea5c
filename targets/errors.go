package targets

// ShortError is err shown as Msg: a cloud SDK's long error text shortened
// for a job's details, its chain kept for errors.Is and errors.As.
type ShortError struct {
	Msg string
	Err error
}

func (e *ShortError) Error() string { return e.Msg }
func (e *ShortError) Unwrap() error { return e.Err }
