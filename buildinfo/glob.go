package buildinfo

// Glob reports whether name matches pattern with the semantics of Python's
// fnmatch.fnmatchcase, which the reference implementation used: '*' matches
// any run of characters (also none), '?' one character, "[seq]" one
// character of seq (ranges such as a-z allowed), "[!seq]" one character not
// in seq; a '[' without its ']' is literal; there are no escapes. Matching
// is by character (rune) and case-sensitive.
func Glob(pattern, name string) bool {
	p := compile(pattern)
	s := []rune(name)
	// Iterative matcher with one backtrack point for the last '*'.
	pi, si := 0, 0
	star, starS := -1, 0
	for si < len(s) {
		if pi < len(p) {
			switch t := p[pi]; {
			case t.star:
				star, starS = pi, si
				pi++
				continue
			case t.matches(s[si]):
				pi++
				si++
				continue
			}
		}
		if star < 0 {
			return false
		}
		starS++
		si = starS
		pi = star + 1
	}
	for pi < len(p) && p[pi].star {
		pi++
	}
	return pi == len(p)
}

type token struct {
	star   bool
	any    bool   // '?'
	lit    rune   // literal, when set is nil and !any
	set    []rune // pairs lo, hi
	negate bool
	isSet  bool
}

func (t token) matches(r rune) bool {
	switch {
	case t.any:
		return true
	case t.isSet:
		in := false
		for i := 0; i+1 < len(t.set); i += 2 {
			if t.set[i] <= r && r <= t.set[i+1] {
				in = true
				break
			}
		}
		return in != t.negate
	default:
		return r == t.lit
	}
}

func compile(pattern string) []token {
	p := []rune(pattern)
	var out []token
	for i := 0; i < len(p); i++ {
		switch c := p[i]; c {
		case '*':
			if len(out) == 0 || !out[len(out)-1].star {
				out = append(out, token{star: true})
			}
		case '?':
			out = append(out, token{any: true})
		case '[':
			j := i + 1
			if j < len(p) && p[j] == '!' {
				j++
			}
			if j < len(p) && p[j] == ']' {
				j++
			}
			for j < len(p) && p[j] != ']' {
				j++
			}
			if j >= len(p) {
				out = append(out, token{lit: '['})
				continue
			}
			stuff := p[i+1 : j]
			t := token{isSet: true}
			if len(stuff) > 0 && stuff[0] == '!' {
				t.negate = true
				stuff = stuff[1:]
			}
			for k := 0; k < len(stuff); k++ {
				if k+2 < len(stuff) && stuff[k+1] == '-' {
					if stuff[k] <= stuff[k+2] { // a reversed range matches nothing
						t.set = append(t.set, stuff[k], stuff[k+2])
					}
					k += 2
					continue
				}
				t.set = append(t.set, stuff[k], stuff[k])
			}
			out = append(out, t)
			i = j
		default:
			out = append(out, token{lit: c})
		}
	}
	return out
}
