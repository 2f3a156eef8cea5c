// Package xmlapi reads and writes the XML documents of the OBS cloud upload
// API byte for byte as OBS wrote them: the job, the job list, the <status>
// document, <hello>, the log's <directory> entry and <pubkeyinfo>, and it
// parses the internal job skeleton an OBS source server posts (with
// encoding/xml's tokenizer, under limits on elements, depth and sizes, so
// that a hostile document costs no more memory than a small multiple of
// its bytes).
//
// Documents are built as github.com/beevik/etree trees and written by a small
// writer of this package that reproduces OBS's XML::Structured output: two
// spaces of indentation, a trailing newline, empty elements as `<x />`, and
// &, <, > and " escaped in text and attributes alike.
package xmlapi
