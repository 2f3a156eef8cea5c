package httpapi

import (
	"net/url"
	"slices"

	"github.com/cloudupload/cloudupload"
)

// MaxIDDigits bounds a job id: 18 decimal digits always fit an int64.
const MaxIDDigits = 18

// ParseID parses a job name: 1 to 18 ASCII decimal digits, no sign, no
// leading zero (so each job has exactly one name). Anything else is not a
// job name, answered as "no such job" by the routes.
func ParseID(s string) (int64, bool) {
	if len(s) == 0 || len(s) > MaxIDDigits || s[0] == '0' && len(s) > 1 {
		return 0, false
	}
	var id int64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		id = id*10 + int64(c-'0')
	}
	return id, true
}

// query is a parsed query string or form body.
type query map[string][]string

// get returns the first value of key, "" when absent.
func (q query) get(key string) string {
	if v := q[key]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// parseQuery parses a query string or urlencoded form body, refusing
// parameters not in allowed, as OBS's server did ("unknown parameter 'x'").
func parseQuery(raw string, allowed ...string) (query, error) {
	v, err := url.ParseQuery(raw)
	if err != nil {
		return nil, cloudupload.Errorf(cloudupload.EINVALID, "malformed query string")
	}
	keys := make([]string, 0, len(v))
	for k := range v {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if !slices.Contains(allowed, k) {
			return nil, cloudupload.Errorf(cloudupload.EINVALID, "unknown parameter '%s'", truncate(k))
		}
	}
	return query(v), nil
}

// checkParams refuses any parameter on routes that take none.
func checkParams(raw string) error {
	_, err := parseQuery(raw)
	return err
}
