// Package download is the HTTP side of cloudupload-serve: it serves the
// mirror trees the mirror target publishes into, to people (HTML) and
// scripts (JSON, plain files), and enforces each directory's BUILD-INFO.txt.
//
// # URLs
//
//	/                      the configured trees
//	/<tree>/<path>/        a listing: HTML, or JSON with Accept: application/json or ?format=json
//	/<tree>/<path>         a file: GET and HEAD with Range, If-Range, ETag, Last-Modified
//	POST /<tree>/<path>    the Accept and Decline buttons of the licence page
//
// # What is never served
//
// Hidden entries (any segment starting with '.', such as .lock and
// .staging-*), BUILD-INFO.txt itself, anything that is neither a regular
// file nor a directory, and anything a symlink reaches outside its tree: a
// path is resolved one segment at a time (Lstat, Readlink) inside an
// os.Root, symlinks are followed lexically only while they stay inside the
// tree and pass the same checks, and the file is opened through that
// os.Root, so even a link changed between the check and the open cannot
// leave the tree. Refusals answer 404 like missing files. Symlinks inside
// the tree (latest, latest_build) are served, listed with their target.
//
// # BUILD-INFO.txt
//
// A BUILD-INFO.txt governs the files of its own directory (the directory
// of the file after symlinks are resolved), as package buildinfo matches
// them:
//
//   - a directory without one is open;
//   - a file no block matches is denied (403), and a BUILD-INFO.txt that
//     does not parse denies the whole directory, listing included;
//   - open files are served;
//   - a protected block with Auth-Groups needs an authenticated user in one
//     of the groups (401 when nobody is authenticated, 403 otherwise);
//   - a protected block with a License-Text needs that licence accepted: a
//     browser gets the licence page (403) with the text, the theme as the
//     CSS class theme-<name> of the body, and Accept and Decline buttons;
//     with Collect-User-Data: yes it also asks for a name and an e-mail
//     address, appended as one JSON line to the user-data log and synced
//     before the download starts;
//   - a protected block with neither is denied.
//
// The directory listing itself is open unless a block matches it (the
// empty pattern, or "*"), in which case it needs what that block needs.
// Listings show every file that is not hidden, with its access (open,
// licence, groups, licence+groups, denied), and the JSON form the digests
// and texts of the licences.
//
// Parsed BUILD-INFO.txt files are cached by directory and kept while the
// file's device, inode, size, mtime and ctime are unchanged: the check
// costs one stat per request.
//
// # Licences
//
// A licence is identified by its digest, the hex SHA-256 of its
// License-Text. Accepting it in a browser sets the cookie
// cloudupload_licences, HMAC-signed with the server's key, which lists the
// accepted digests (their first 16 bytes, at most 64, for a year): each
// licence is accepted once, and a changed text is a new licence. The
// Accept form carries a signed token bound to the file and the digests, so
// another site cannot accept a licence on a visitor's behalf.
//
// Scripts accept explicitly, without a cookie: the header
// X-Accept-License: <digest>[,<digest>…] or the query parameter
// accept-license=<digest>, plus X-User-Name and X-User-Email when the
// licence collects user data. The 403 answer to a script names the
// digests it needs.
//
// # Users
//
// A user authenticates with a token from the users file (package
// credfile: "alice sha256=<hex> groups=team-x,team-y") as a bearer token
// or as the password of HTTP Basic (user name = the entry's name), or,
// only on connections from the trusted proxy address, with the proxy's
// user and groups headers (X-Forwarded-User, X-Forwarded-Groups by
// default, as oauth2-proxy sets them). A wrong token is 401, never
// anonymous access.
//
// # Access log
//
// One line per request in the Combined Log Format, the authenticated user
// in the third field, followed by licence=<decision> and ms=<duration>
// (see logAccess).
package download
