package download

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/mail"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

const (
	// CookieName holds the digests of the licences a browser accepted.
	CookieName = "cloudupload_licences"
	// AcceptHeader and AcceptParam carry an explicit acceptance from a
	// script: the licence digests, comma-separated.
	AcceptHeader = "X-Accept-License"
	AcceptParam  = "accept-license"
	// NameHeader and EmailHeader carry the user data a Collect-User-Data
	// licence asks for, when a script accepts it.
	NameHeader  = "X-User-Name"
	EmailHeader = "X-User-Email"

	cookieLife    = 365 * 24 * time.Hour
	maxCookieLics = 64 // the oldest acceptances fall out beyond this
	digestPrefix  = 16 // bytes of a digest kept in the cookie
	formLife      = 2 * time.Hour
	maxFormBytes  = 16 << 10
)

// accepted is the set of licence digests a request accepts.
type accepted struct {
	prefixes [][digestPrefix]byte // from the cookie
	explicit map[string]bool      // full hex digests from the header or parameter
}

func (a accepted) has(digest string) bool {
	if a.explicit[digest] {
		return true
	}
	raw, err := hex.DecodeString(digest)
	if err != nil || len(raw) < digestPrefix {
		return false
	}
	for _, p := range a.prefixes {
		if [digestPrefix]byte(raw[:digestPrefix]) == p {
			return true
		}
	}
	return false
}

func (h *Handler) mac(parts ...[]byte) []byte {
	m := hmac.New(sha256.New, h.cfg.CookieKey)
	for _, p := range parts {
		m.Write(p)
		m.Write([]byte{0})
	}
	return m.Sum(nil)
}

// acceptances reads the signed cookie (ignored when forged or expired) and
// the explicit acceptance of a script.
func (h *Handler) acceptances(r *http.Request) accepted {
	var a accepted
	if c, err := r.Cookie(CookieName); err == nil {
		a.prefixes = h.readCookie(c.Value, time.Now())
	}
	explicit := r.Header.Get(AcceptHeader)
	if q := r.URL.Query().Get(AcceptParam); q != "" {
		explicit += "," + q
	}
	for _, d := range strings.Split(explicit, ",") {
		if d = strings.ToLower(strings.TrimSpace(d)); len(d) == 64 {
			if a.explicit == nil {
				a.explicit = map[string]bool{}
			}
			a.explicit[d] = true
		}
	}
	return a
}

func (h *Handler) readCookie(v string, now time.Time) [][digestPrefix]byte {
	payload, sig, ok := strings.Cut(v, ".")
	if !ok {
		return nil
	}
	p, err1 := base64.RawURLEncoding.DecodeString(payload)
	s, err2 := base64.RawURLEncoding.DecodeString(sig)
	if err1 != nil || err2 != nil || len(p) < 8 || (len(p)-8)%digestPrefix != 0 {
		return nil
	}
	if !hmac.Equal(s, h.mac([]byte("licences"), p)) {
		return nil
	}
	if time.Unix(int64(binary.BigEndian.Uint64(p)), 0).Before(now) {
		return nil
	}
	var out [][digestPrefix]byte
	for rest := p[8:]; len(rest) > 0; rest = rest[digestPrefix:] {
		out = append(out, [digestPrefix]byte(rest[:digestPrefix]))
	}
	return out
}

// licenceCookie returns the cookie holding prev plus the digests added.
func (h *Handler) licenceCookie(r *http.Request, prev [][digestPrefix]byte, add []string, now time.Time) *http.Cookie {
	set := append([][digestPrefix]byte(nil), prev...)
	for _, d := range add {
		raw, err := hex.DecodeString(d)
		if err != nil || len(raw) < digestPrefix {
			continue
		}
		p := [digestPrefix]byte(raw[:digestPrefix])
		dup := false
		for _, q := range set {
			dup = dup || q == p
		}
		if !dup {
			set = append(set, p)
		}
	}
	if len(set) > maxCookieLics {
		set = set[len(set)-maxCookieLics:]
	}
	payload := binary.BigEndian.AppendUint64(nil, uint64(now.Add(cookieLife).Unix()))
	for _, p := range set {
		payload = append(payload, p[:]...)
	}
	return &http.Cookie{
		Name:     CookieName,
		Value:    base64.RawURLEncoding.EncodeToString(payload) + "." + base64.RawURLEncoding.EncodeToString(h.mac([]byte("licences"), payload)),
		Path:     "/",
		MaxAge:   int(cookieLife / time.Second),
		HttpOnly: true,
		Secure:   h.secure(r),
		SameSite: http.SameSiteLaxMode,
	}
}

// formToken binds an Accept form to the page that showed it: another site
// cannot make a browser accept a licence by posting to us.
func (h *Handler) formToken(urlPath string, digests []string, expires int64) string {
	return hex.EncodeToString(h.mac([]byte("accept"), []byte(urlPath), []byte(strings.Join(digests, ",")), []byte(strconv.FormatInt(expires, 10))))
}

func (h *Handler) checkForm(urlPath string, digests []string, token, expires string, now time.Time) bool {
	exp, err := strconv.ParseInt(expires, 10, 64)
	if err != nil || time.Unix(exp, 0).Before(now) {
		return false
	}
	want := h.formToken(urlPath, digests, exp)
	return hmac.Equal([]byte(token), []byte(want))
}

// userData is one line of the --user-data-log.
type userData struct {
	Time    string `json:"time"`
	Path    string `json:"path"`
	Licence string `json:"licence"`
	Name    string `json:"name"`
	Email   string `json:"email"`
	User    string `json:"user,omitempty"`
	Remote  string `json:"remote"`
}

// checkUserData validates what a person typed.
func checkUserData(name, email string) (string, string, error) {
	name, email = strings.TrimSpace(name), strings.TrimSpace(email)
	switch {
	case name == "":
		return "", "", fmt.Errorf("a name is required")
	case len(name) > 200 || !utf8.ValidString(name) || strings.IndexFunc(name, unicode.IsControl) >= 0:
		return "", "", fmt.Errorf("the name must be at most 200 printable characters")
	case email == "":
		return "", "", fmt.Errorf("an e-mail address is required")
	}
	a, err := mail.ParseAddress(email)
	if err != nil || a.Name != "" || len(email) > 254 || !strings.Contains(a.Address, "@") {
		return "", "", fmt.Errorf("that is not an e-mail address (want name@domain)")
	}
	return name, a.Address, nil
}

// recordUserData appends one line per licence and syncs it: the record is
// on disk before the download starts.
func (h *Handler) recordUserData(recs []userData) error {
	if h.cfg.UserData == nil {
		return fmt.Errorf("this server does not record user data (no --user-data-log)")
	}
	var buf []byte
	for _, rec := range recs {
		b, err := json.Marshal(rec)
		if err != nil {
			return err
		}
		buf = append(append(buf, b...), '\n')
	}
	h.udMu.Lock()
	defer h.udMu.Unlock()
	if _, err := h.cfg.UserData.Write(buf); err != nil {
		return fmt.Errorf("record user data: %w", err)
	}
	if err := h.cfg.UserData.Sync(); err != nil {
		return fmt.Errorf("record user data: %w", err)
	}
	return nil
}
