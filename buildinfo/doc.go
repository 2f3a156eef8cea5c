// Package buildinfo reads and writes BUILD-INFO.txt, the per-directory file
// of Linaro's licence protection (format versions 0.1 to 0.5) that says
// which files of a published directory are open and which need a licence
// accepted or membership of a group before download.
//
// # Grammar
//
//	Format-Version: 0.5            first non-blank line, exactly once
//
//	Files-Pattern: *.img, *.tar.bz2   starts a block; comma-separated globs
//	License-Type: protected        open | protected
//	Auth-Groups: some-team         (old name: OpenID-Launchpad-Teams)
//	Theme: vendorname
//	Collect-User-Data: no          yes | no
//	Build-Name: name
//	License-Text: <p>first line
//	 continuation lines begin with a space (or tab)
//
// Field names are case-insensitive, values are trimmed, CR before LF is
// ignored, blank lines are ignored (also inside a License-Text). Any other
// field is an error, as is a field before the first Files-Pattern, a field
// repeated within one block, an indented line that does not continue a
// License-Text, and a file without Format-Version on its first non-blank
// line (an empty file included). Every error is a *SyntaxError carrying the
// line number. Format-Version, License-Type and Collect-User-Data values are
// not rejected when unusual; Warnings lists them.
//
// # Matching (Match, Open)
//
// Patterns are shell globs with Python fnmatch semantics (*, ?, [seq],
// [!seq]; no escapes), matched case-sensitively against a file's base name
// in the file's own directory; the empty pattern (a trailing comma) matches
// the directory listing itself (name ""), as does "*". BUILD-INFO.txt itself
// never matches. Precedence, deterministic:
//
//  1. A pattern equal to the name beats every glob.
//  2. Otherwise the first pattern in file order that matches wins.
//  3. The file's blocks are all the blocks listing the winning pattern, in
//     file order (a repeated pattern accumulates blocks: several licences).
//  4. When those blocks mix open and non-open ones, every open block is
//     dropped (a block whose License-Type is missing or not "open" counts
//     as protected: fail closed).
//
// A name no block matches is denied (Match returns nil), and a directory
// whose BUILD-INFO.txt does not parse denies everything.
//
// These rules fix the reference parser's bugs: it looped forever on a field
// before the first Files-Pattern, crashed on an empty file, picked among
// overlapping globs by hash order, and dropped the wrong blocks when more
// than one open block met a protected one.
package buildinfo
