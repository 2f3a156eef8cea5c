// Package client speaks the cloud upload API of cloudupload-server (OBS's
// cloud upload contract) from the caller's side: typed calls that create a
// job by the build-root route (Submit) or by the source-server route
// (Skeleton then Put), list, get, read and follow a job's log, kill a job
// and wait for it to end. It also streams a directory as a tar archive of a
// size known in advance (TarDir), which Put needs because the server wants
// a Content-Length.
//
// Every call returns, when the server refused it, an *Error carrying the
// HTTP status and the server's <summary>, written for a person. Other
// errors mean the server could not be reached or did not answer as the
// contract says; IsServerError tells the two apart from local mistakes.
//
// Job documents are read tolerantly: elements this client does not know
// are kept in Job.Extra, and the progress elements newer servers add after
// OBS's (bytes done and total, rate, ETA) are read into Job.Transfer when
// present, so an older server simply shows no transfer figures.
//
// The bearer token is sent only on the requests that change something
// (POST, PUT), as the server requires it there, and never appears in an
// error message.
package client
