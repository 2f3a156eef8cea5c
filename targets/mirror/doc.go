// Package mirror is the target that publishes a build into a local download
// tree, following the conventions of Linaro's snapshots server and
// StarlingX's build mirror (see the repository's publishing reference), and
// the retention (prune) of such trees.
//
// # Trees
//
// The server is configured with named trees (--mirror NAME=DIR) and hands
// them to the uploader as CLOUDUPLOAD_MIRRORS=NAME=DIR[,NAME=DIR…]; DIR
// must be absolute and exist (the target creates directories below it,
// never the tree itself).
//
// # Target data
//
//	{
//	  "tree":       "demo",                 required: a configured tree
//	  "series":     "master/centos",        default <project>/<repository>/<arch>/<package>
//	  "build_id":   "20261121T101500Z",     default: now, UTC, %Y%m%dT%H%M%SZ
//	  "result":     "success",              success | fail
//	  "area":       "outputs",              outputs | inputs; absent = flat
//	  "links":      ["latest", "latest_build"],
//	  "build_info": "Format-Version: 0.5\n…"  or {"license_type": "open"}
//	  "retention":  "master"                a class name for prune
//	  "unpack":     true                    the image is a tar archive: publish its tree
//	}
//
// Every segment of series, the build id and each link name follow
// cloudupload.CheckName (no "..", no '/', no leading '.', no control
// characters); series has no empty segment and is relative. The default
// series keeps OBS names as they are (':' included), e.g.
// home:user/openSUSE_Tumbleweed/x86_64/appliance. A generated build id that
// is already taken gets a suffix (20261121T101500Z.2), so two jobs finishing
// in the same second both publish; a build_id given explicitly that exists
// is an error (ECONFLICT) and changes nothing. Unknown fields are an error
// naming them.
//
// build_info is either the text of a BUILD-INFO.txt (it must parse with
// package buildinfo, else the job is refused with the line number) or a
// licence policy to generate one from:
//
//	{"license_type": "open"}
//	{"license_type": "protected", "auth_groups": ["team"], "theme": "linaro",
//	 "license_text": "<p>EULA…</p>", "collect_user_data": true,
//	 "build_name": "…", "files_pattern": ["*.img"]}
//
// A policy is one block, for files_pattern (default "*": every file and the
// listing); a protected policy needs auth_groups or license_text.
//
// # Whole builds (unpack)
//
// With "unpack": true the image must be named like a tar archive (.tar,
// .tar.gz/.tgz, .tar.xz/.txz, .tar.zst/.tzst; checked by Check). It is
// streamed through uploader/image.OpenStream (decompressed on the fly, never
// copied) and its tree becomes the build, below <area>/ when area is given;
// the result is "<tree>:<series>/<build_id>[/<area>]". Each entry is checked
// before it is written, all in the staging directory (see PublishArchive for
// what is refused); a BUILD-INFO.txt in the archive must parse and governs
// its own directory; build_info in the target data is written at the
// archive's root and may not meet one from the archive there. Every regular
// file is in the MANIFEST (symlinks are not) and is hard-linked to the
// newest build's copy when unchanged. Files are fsynced together after the
// last entry, before the MANIFEST and the rename.
//
// # Layout
//
//	<tree>/<series>/.lock                       flock: one publication or prune at a time
//	<tree>/<series>/latest -> <build_id>        links, relative, only to successful builds
//	<tree>/<series>/<build_id>/MANIFEST         sha256sum -c format, every file but itself
//	<tree>/<series>/<build_id>/RESULT           success | fail
//	<tree>/<series>/<build_id>/RETENTION        the class, when given
//	<tree>/<series>/<build_id>/KEEP             added by an operator: pinned against prune
//	<tree>/<series>/<build_id>/[<area>/]<filename>
//	<tree>/<series>/<build_id>/[<area>/]BUILD-INFO.txt
//
// The result of a job is "<tree>:<series>/<build_id>/[<area>/]<filename>":
// the tree's name and the path within it, never a server path.
//
// # Publication
//
//  1. A hidden staging directory .staging-<build_id>-<random> is made in the
//     series directory (same file system), the image is copied into it as
//     received (not decompressed) and hashed on the way. When the newest
//     build of the series lists a file with the same sha256 in its MANIFEST
//     and that file has the same size, the copy is replaced by a hard link
//     to it, and the copy is dropped without being fsynced (dedup: the
//     disk keeps one copy, and most of the new one is never written);
//     otherwise the copy is fsynced. BUILD-INFO.txt, RESULT and RETENTION
//     are written beside it.
//  2. The series lock is taken. The build id is checked free and the links
//     are checked to be links (or absent); dedup is tried once more against
//     a build published meanwhile; the MANIFEST is written; files and
//     directories are fsynced.
//  3. One rename puts the build in place: readers see all of it or nothing.
//  4. For a successful build only, each link is moved forward: it is left
//     alone when it already points at an existing build whose id orders
//     after this one (CompareIDs: natural order, digit runs as numbers);
//     otherwise a symlink to a temporary name is renamed over it.
//
// On failure or cancellation before step 3 the staging directory is
// removed and nothing else has changed. An uploader killed with SIGKILL can
// leave a .staging-* directory; prune removes those older than a day.
package mirror
