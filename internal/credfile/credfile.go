package credfile

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"strings"
	"unicode/utf8"
)

// Limits on what Parse accepts: the file is an operator's, but it is read
// again on every reload and a mistake (a log file given instead) must not
// exhaust memory.
const (
	MaxSize = 4 << 20
	MaxLine = 64 << 10
)

// HashKey is the one key this package requires and interprets.
const HashKey = "sha256"

// Error is a problem at a line of a credential file.
type Error struct {
	File string // as given to Parse
	Line int    // 1-based; 0 when the problem is not at a line
	Msg  string
}

func (e *Error) Error() string {
	if e.Line == 0 {
		return e.File + ": " + e.Msg
	}
	return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
}

// Entry is one line of a credential file.
type Entry struct {
	Name string
	Line int
	// Values holds every key but sha256, each with its list of items in
	// the order written. A key that is absent is not in the map.
	Values map[string][]string
	sum    [sha256.Size]byte
}

// Get returns the items of key and whether the entry has the key; callers
// give an absent key its meaning (usually "any").
func (e *Entry) Get(key string) ([]string, bool) {
	v, ok := e.Values[key]
	return v, ok
}

// Allows reports whether the entry has no restriction on key, or lists
// value among its items (exact, case-sensitive).
func (e *Entry) Allows(key, value string) bool {
	items, ok := e.Values[key]
	if !ok {
		return true
	}
	for _, it := range items {
		if it == value {
			return true
		}
	}
	return false
}

// File is a parsed credential file.
type File struct {
	Path    string
	Entries []Entry // in file order
}

// Load reads and parses the file at path.
func Load(path string) (*File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return Parse(f, path)
}

// Parse reads a credential file; name is used in errors.
func Parse(r io.Reader, name string) (*File, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxSize+1))
	if err != nil {
		return nil, &Error{File: name, Msg: err.Error()}
	}
	if len(data) > MaxSize {
		return nil, &Error{File: name, Msg: fmt.Sprintf("larger than %d bytes", MaxSize)}
	}
	f := &File{Path: name}
	names := map[string]int{}
	sums := map[[sha256.Size]byte]int{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), MaxLine)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSuffix(sc.Text(), "\r")
		errorf := func(format string, a ...any) error {
			return &Error{File: name, Line: n, Msg: fmt.Sprintf(format, a...)}
		}
		if !utf8.ValidString(line) {
			return nil, errorf("not valid UTF-8")
		}
		words := strings.Fields(line)
		if len(words) == 0 || strings.HasPrefix(words[0], "#") {
			continue
		}
		e := Entry{Name: words[0], Line: n, Values: map[string][]string{}}
		if strings.Contains(e.Name, "=") {
			return nil, errorf("an entry starts with its name, not with %q", shorten(e.Name))
		}
		if strings.IndexFunc(e.Name, isControl) >= 0 {
			return nil, errorf("name %q contains a control character", shorten(e.Name))
		}
		if prev, dup := names[e.Name]; dup {
			return nil, errorf("name %q already used on line %d", shorten(e.Name), prev)
		}
		haveSum := false
		for _, w := range words[1:] {
			key, value, ok := strings.Cut(w, "=")
			if !ok {
				return nil, errorf("%q is not a key=value word", shorten(w))
			}
			if !validKey(key) {
				return nil, errorf("key %q: want a lower-case word (letters, digits, '-', '_')", shorten(key))
			}
			if _, dup := e.Values[key]; dup || (key == HashKey && haveSum) {
				return nil, errorf("key %s given twice", key)
			}
			if key == HashKey {
				// Never quote this value: it may be a token pasted by mistake.
				if len(value) != hex.EncodedLen(sha256.Size) {
					return nil, errorf("sha256 must be %d hex digits (the SHA-256 of the token, e.g. from sha256sum), not %d characters", hex.EncodedLen(sha256.Size), len(value))
				}
				if _, err := hex.Decode(e.sum[:], []byte(value)); err != nil {
					return nil, errorf("sha256 is not hexadecimal")
				}
				haveSum = true
				continue
			}
			if value == "" {
				return nil, errorf("key %s has an empty value (leave the key out to allow any)", key)
			}
			items := strings.Split(value, ",")
			for _, it := range items {
				if it == "" {
					return nil, errorf("key %s: empty item in %q", key, shorten(value))
				}
				if strings.IndexFunc(it, isControl) >= 0 {
					return nil, errorf("key %s: item %q contains a control character", key, shorten(it))
				}
			}
			e.Values[key] = items
		}
		if !haveSum {
			return nil, errorf("entry %q has no sha256=<hex of its token>", shorten(e.Name))
		}
		if prev, dup := sums[e.sum]; dup {
			return nil, errorf("entry %q has the same token as line %d", shorten(e.Name), prev)
		}
		names[e.Name], sums[e.sum] = n, n
		f.Entries = append(f.Entries, e)
	}
	if err := sc.Err(); err != nil {
		if err == bufio.ErrTooLong {
			return nil, &Error{File: name, Line: n + 1, Msg: fmt.Sprintf("line longer than %d bytes", MaxLine)}
		}
		return nil, &Error{File: name, Msg: err.Error()}
	}
	return f, nil
}

// Lookup returns the entry whose token is token, or nil.
func (f *File) Lookup(token string) *Entry {
	if f == nil || token == "" {
		return nil
	}
	return f.LookupSum(sha256.Sum256([]byte(token)))
}

// LookupSum returns the entry whose token hashes to sum, or nil. It
// compares sum with every entry in constant time and does not stop at a
// match, so its timing tells nothing about which hash came close.
func (f *File) LookupSum(sum [sha256.Size]byte) *Entry {
	if f == nil {
		return nil
	}
	found := -1
	for i := range f.Entries {
		eq := subtle.ConstantTimeCompare(f.Entries[i].sum[:], sum[:])
		found = subtle.ConstantTimeSelect(eq, i, found)
	}
	if found < 0 {
		return nil
	}
	return &f.Entries[found]
}

// ByName returns the entry called name, or nil.
func (f *File) ByName(name string) *Entry {
	if f == nil {
		return nil
	}
	for i := range f.Entries {
		if f.Entries[i].Name == name {
			return &f.Entries[i]
		}
	}
	return nil
}

// HashToken returns the hex SHA-256 of a token, as the sha256 key wants it.
func HashToken(token string) string {
	s := sha256.Sum256([]byte(token))
	return hex.EncodeToString(s[:])
}

func validKey(k string) bool {
	if k == "" || len(k) > 64 {
		return false
	}
	for _, r := range k {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f }

func shorten(s string) string {
	if len(s) > 60 {
		return s[:57] + "..."
	}
	return s
}
