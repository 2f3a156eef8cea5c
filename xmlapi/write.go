package xmlapi

import (
	"bytes"
	"strings"
	"unicode/utf8"

	"github.com/beevik/etree"
)

// escaper escapes text and attribute values as OBS's XML::Structured does,
// and a carriage return as &#13; so that it survives XML's line-end
// normalization.
var escaper = strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&quot;", "\r", "&#13;")

// clean replaces what XML 1.0 cannot carry (control characters other than
// tab, newline and carriage return; invalid UTF-8) with U+FFFD, so a
// document stays readable whatever an uploader wrote in its result.
func clean(s string) string {
	ok := utf8.ValidString(s)
	for i := 0; ok && i < len(s); i++ {
		if c := s[i]; c < 0x20 && c != '\t' && c != '\n' && c != '\r' {
			ok = false
		}
	}
	if ok {
		return s
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 && r != '\t' && r != '\n' && r != '\r' || r == 0xfffe || r == 0xffff {
			return utf8.RuneError
		}
		return r
	}, strings.ToValidUTF8(s, "\uFFFD"))
}

// write serializes e as XML::Structured does. Elements named in containers
// are written with an opening and a closing tag on their own lines even when
// empty (the empty job list); other empty elements are written `<x />`.
func write(e *etree.Element, containers ...string) []byte {
	var b bytes.Buffer
	writeElement(&b, e, 0, containers)
	return b.Bytes()
}

func writeElement(b *bytes.Buffer, e *etree.Element, depth int, containers []string) {
	indent := strings.Repeat("  ", depth)
	b.WriteString(indent)
	b.WriteByte('<')
	b.WriteString(e.Tag)
	for _, a := range e.Attr {
		b.WriteByte(' ')
		b.WriteString(a.Key)
		b.WriteString(`="`)
		escaper.WriteString(b, clean(a.Value))
		b.WriteByte('"')
	}
	children := e.ChildElements()
	text := e.Text()
	container := false
	for _, c := range containers {
		if c == e.Tag {
			container = true
		}
	}
	switch {
	case len(children) > 0 || container:
		b.WriteString(">\n")
		for _, c := range children {
			writeElement(b, c, depth+1, containers)
		}
		b.WriteString(indent)
		b.WriteString("</")
		b.WriteString(e.Tag)
		b.WriteString(">\n")
	case text != "":
		b.WriteByte('>')
		escaper.WriteString(b, clean(text))
		b.WriteString("</")
		b.WriteString(e.Tag)
		b.WriteString(">\n")
	default:
		b.WriteString(" />\n")
	}
}
