// Package credfile reads the credential files of the upload daemon
// (--clients) and of the download server (--users): one entry per line,
//
//	# comment
//	ci-kernel  sha256=<hex of its token>  target=mirror  tree=snapshots  series=kernel-hwpacks,android  user=ci
//	alice      sha256=<hex of her token>  groups=team-x,team-y
//
// An entry is a name, then key=value words separated by spaces or tabs.
// sha256 is required: the SHA-256 of the entry's token, 64 hex digits (the
// token itself is never stored). Every other value is a comma-separated
// list of non-empty items; a key that is absent means "any" to the callers,
// which give the keys their meaning (this package knows none but sha256).
// Lines holding only spaces, and lines whose first non-space character is
// '#', are ignored.
//
// Refused, with an *Error naming the file and the line: a name holding '='
// or a control character, a word without '=', an unknown-looking key (keys
// are lower-case words: letters, digits, '-', '_'), a key given twice, an
// empty value or list item, a missing or malformed sha256, a name or a
// token used by two entries, a line over MaxLine bytes, a file over
// MaxSize. Error messages never quote the sha256 value (an operator may
// have pasted the token there by mistake).
//
// Lookup hashes a presented token and compares it with every entry's hash
// in constant time (crypto/subtle), without stopping at a match. A
// Reloader holds the current file and replaces it on Reload (e.g. on
// SIGHUP), keeping the old one when the new one does not parse.
package credfile
