package httpapi

import (
	"context"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cloudupload/cloudupload"
	"github.com/cloudupload/cloudupload/xmlapi"
)

// Manager is what the API needs of the job manager; *backend.Manager
// implements it. Errors are *cloudupload.Error where the caller is at fault
// (ENOTFOUND for unknown ids, EINVALID, ECONFLICT…); anything else is
// answered as an internal error.
type Manager interface {
	// Create validates and creates a job; for Origin fetch the image is then
	// copied in the background. It returns the job as stored (state created).
	Create(ctx context.Context, job cloudupload.Job, data []byte) (cloudupload.Job, error)
	// Receive reads the image of a job created with Origin put; size is the
	// request's Content-Length, -1 when unknown (chunked). When the job has
	// a size, that is what must arrive: a size that differs, a short or a
	// long body fails the job (EINVALID with the reason).
	Receive(ctx context.Context, id int64, body io.Reader, size int64) error
	// Get returns one job, ENOTFOUND "no such job" when unknown. A job
	// receiving or uploading carries its live progress figures.
	Get(id int64) (cloudupload.Job, error)
	// List returns the jobs of ids in that order, unknown ids skipped; nil
	// ids means every job in ascending id order; live progress as Get.
	List(ids []int64) []cloudupload.Job
	// Kill ends an unfinished job and returns once it is final; nil when the
	// job is already final.
	Kill(ctx context.Context, id int64) error
	// LogPath returns the path of the job's log, which may not exist yet.
	LogPath(id int64) (string, error)
}

// Limits on request bodies, checked before a byte is buffered.
const (
	MaxTargetData = 10 << 20 // JSON target data of POST /cloudupload, as OBS
	// MaxSkeleton bounds the XML job skeleton: the fields and the hex of
	// target data, which in practice is a few hundred bytes of JSON (so up
	// to about 500 KiB of target data by this route).
	MaxSkeleton = 1 << 20
	maxForm     = 64 << 10 // form body of POST /cloudupload/<id>
)

// What holding a body costs in memory, for the budget: target data is held
// as read; a skeleton also as its parsed field texts and decoded data.
func targetDataCost(n int64) int64 { return n + 4<<10 }
func skeletonCost(n int64) int64   { return 5*n + 4<<10 }
func formCost(n int64) int64       { return 2*n + 4<<10 }

// Config configures the handler.
type Config struct {
	Manager Manager // required
	// Token, when not empty, is the bearer token every POST and PUT must
	// carry (Authorization: Bearer <token>); GETs stay open. Its holder is
	// not limited by scope.
	Token string
	// Clients, when not nil, are the pushing clients (--clients): a POST or
	// PUT with a client's token is served within the client's scope (see
	// clients.go), and the job records the client. Token keeps working
	// beside it.
	Clients Clients
	// PrivateReads makes GET and HEAD require the token or a client too.
	PrivateReads bool
	// PublicKey is the PEM public key served at /cloudupload/_pubkey; empty
	// answers 404 there.
	PublicKey []byte
	// LogPoll is how often a streamed log is checked for growth; default 200ms.
	LogPoll time.Duration
	// MaxReceives bounds the images (PUT) streaming to disk at once, each
	// with its buffer (DefaultMaxReceives when 0); a PUT that finds no
	// place within 10s is answered 503 before its job changes.
	MaxReceives int
	// MaxBuffered bounds the bytes of request bodies held in memory at once
	// (DefaultMaxBuffered when 0); a request that finds no room within 10s
	// is answered 503. It must be at least what one body of each kind costs.
	MaxBuffered int64
	Logger      *slog.Logger // default slog.Default()
	// Metrics, when set, counts requests and is served at /metrics.
	Metrics *Metrics
}

// Server is the http.Handler of the API.
type Server struct {
	m       Manager
	token   []byte
	pubkey  []byte
	pubinfo []byte // <pubkeyinfo> document, nil without key
	poll    time.Duration
	log     *slog.Logger

	budget   *budget       // of buffered request bodies
	receives *budget       // places for PUTs streaming
	buffered int64         // the budget's size
	bodyWait time.Duration // for room in the budget

	stopOnce sync.Once
	stopping chan struct{} // closed by StopStreams

	clients      Clients // nil without --clients
	privateReads bool

	metrics *Metrics     // nil: no /metrics
	ui      http.Handler // the dashboard (ui.go)
}

// New returns the API handler. It fails when PublicKey is set but is not a
// PEM public key.
func New(cfg Config) (*Server, error) {
	s := &Server{m: cfg.Manager, token: []byte(cfg.Token), pubkey: cfg.PublicKey, poll: cfg.LogPoll, log: cfg.Logger,
		stopping: make(chan struct{}), clients: cfg.Clients, privateReads: cfg.PrivateReads,
		metrics: cfg.Metrics, ui: newUI()}
	if s.poll <= 0 {
		s.poll = 200 * time.Millisecond
	}
	s.buffered = cfg.MaxBuffered
	if s.buffered <= 0 {
		s.buffered = DefaultMaxBuffered
	}
	s.budget, s.bodyWait = newBudget(s.buffered), defaultBodyWait
	if cfg.MaxReceives <= 0 {
		cfg.MaxReceives = DefaultMaxReceives
	}
	s.receives = newBudget(int64(cfg.MaxReceives))
	if s.log == nil {
		s.log = slog.Default()
	}
	if len(cfg.PublicKey) > 0 {
		info, err := PubkeyInfo(cfg.PublicKey)
		if err != nil {
			return nil, err
		}
		s.pubinfo = xmlapi.Pubkey(info)
	}
	return s, nil
}

// PubkeyInfo describes a PEM public key (PKIX "PUBLIC KEY" or PKCS#1 "RSA
// PUBLIC KEY") as OBS's view=info did: algorithm, size in bits, and as
// fingerprint the SHA-256 of the key's DER form in groups of four hex
// digits, whose last eight digits are the key id.
func PubkeyInfo(pemKey []byte) (xmlapi.PubkeyInfo, error) {
	block, _ := pem.Decode(pemKey)
	if block == nil {
		return xmlapi.PubkeyInfo{}, errors.New("public key is not PEM")
	}
	var key any
	var err error
	switch block.Type {
	case "PUBLIC KEY":
		key, err = x509.ParsePKIXPublicKey(block.Bytes)
	case "RSA PUBLIC KEY":
		key, err = x509.ParsePKCS1PublicKey(block.Bytes)
	default:
		err = fmt.Errorf("PEM block %q is not a public key", block.Type)
	}
	if err != nil {
		return xmlapi.PubkeyInfo{}, fmt.Errorf("parse public key: %w", err)
	}
	k, ok := key.(*rsa.PublicKey)
	if !ok {
		return xmlapi.PubkeyInfo{}, fmt.Errorf("public key of type %T is not RSA", key)
	}
	sum := sha256.Sum256(block.Bytes)
	hx := hex.EncodeToString(sum[:])
	var fp strings.Builder
	for i := 0; i < len(hx); i += 4 {
		if i > 0 {
			fp.WriteByte(' ')
		}
		fp.WriteString(hx[i : i+4])
	}
	return xmlapi.PubkeyInfo{KeyID: hx[len(hx)-8:], Algo: "rsa", KeySize: k.Size() * 8,
		Fingerprint: fp.String(), PEM: pemKey}, nil
}

// StopStreams ends the log streams in progress (after sending what the
// logs hold) and makes new ones answer at once, so that a shutdown does not
// wait for running jobs. Call it before http.Server.Shutdown.
func (s *Server) StopStreams() {
	s.stopOnce.Do(func() { close(s.stopping) })
}

// ServeHTTP routes a request as OBS's upload server did.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if s.serveExtra(w, r) { // the dashboard and the metrics (ui.go)
		return
	}
	r, ok := s.withCaller(r)
	if !ok {
		w.Header().Set("WWW-Authenticate", `Bearer realm="cloudupload"`)
		s.fail(w, r, cloudupload.Errorf(cloudupload.EUNAUTHORIZED, "authorization required"))
		return
	}
	path := r.URL.Path
	switch {
	case path == "/":
		if r.Method == http.MethodGet || r.Method == http.MethodHead {
			s.hello(w, r)
			return
		}
	case path == "/cloudupload":
		switch r.Method {
		case http.MethodGet, http.MethodHead:
			s.list(w, r)
			return
		case http.MethodPost:
			s.create(w, r)
			return
		}
	case path == "/cloudupload/_pubkey":
		if r.Method == http.MethodGet || r.Method == http.MethodHead {
			s.getPubkey(w, r)
			return
		}
	case strings.HasPrefix(path, "/cloudupload/"):
		name, rest, _ := strings.Cut(path[len("/cloudupload/"):], "/")
		if (rest == "" || rest == "_log") && s.forward(w, r, name) {
			return
		}
		switch {
		case rest == "" && !strings.HasSuffix(path, "/"):
			switch r.Method {
			case http.MethodGet, http.MethodHead:
				s.job(w, r, name)
				return
			case http.MethodPut:
				s.put(w, r, name)
				return
			case http.MethodPost:
				s.command(w, r, name)
				return
			}
		case rest == "_log":
			if r.Method == http.MethodGet || r.Method == http.MethodHead {
				s.logFile(w, r, name)
				return
			}
		}
	}
	s.fail(w, r, cloudupload.Errorf(cloudupload.EINVALID, "unknown request: %s:%s", r.Method, path))
}

// authorized reports whether r carries the configured bearer token (or no
// token is configured).
func (s *Server) authorized(r *http.Request) bool {
	if len(s.token) == 0 {
		return true
	}
	auth := r.Header.Get("Authorization")
	const prefix = "Bearer "
	if len(auth) < len(prefix) || !strings.EqualFold(auth[:len(prefix)], prefix) {
		return false
	}
	return subtle.ConstantTimeCompare([]byte(strings.TrimSpace(auth[len(prefix):])), s.token) == 1
}

func (s *Server) hello(w http.ResponseWriter, r *http.Request) {
	if err := checkParams(r.URL.RawQuery); err != nil {
		s.fail(w, r, err)
		return
	}
	writeXML(w, xmlapi.Hello())
}

func (s *Server) getPubkey(w http.ResponseWriter, r *http.Request) {
	q, err := parseQuery(r.URL.RawQuery, "view")
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if s.pubkey == nil {
		s.fail(w, r, cloudupload.Errorf(cloudupload.ENOTFOUND, "no public key configured"))
		return
	}
	switch view := q.get("view"); view {
	case "":
		w.Header().Set("Content-Type", "text/plain")
		w.Header().Set("Content-Length", strconv.Itoa(len(s.pubkey)))
		w.Write(s.pubkey)
	case "info":
		writeXML(w, s.pubinfo)
	default:
		s.fail(w, r, cloudupload.Errorf(cloudupload.EINVALID, "unsupported view '%s'", truncate(view)))
	}
}

func (s *Server) list(w http.ResponseWriter, r *http.Request) {
	q, err := parseQuery(r.URL.RawQuery, "name")
	if err != nil {
		s.fail(w, r, err)
		return
	}
	names := q["name"]
	if len(names) == 0 {
		writeList(w, r, s.m.List(nil))
		return
	}
	ids := make([]int64, 0, len(names))
	for _, n := range names {
		// OBS's check (num): digits only; such a name that is no job's
		// (007, too long) is skipped like an unknown id.
		if n == "" {
			s.fail(w, r, cloudupload.Errorf(cloudupload.EINVALID, "number is empty"))
			return
		}
		if strings.Trim(n, "0123456789") != "" {
			s.fail(w, r, cloudupload.Errorf(cloudupload.EINVALID, "not a number: '%s'", truncate(n)))
			return
		}
		if id, ok := ParseID(n); ok {
			ids = append(ids, id)
		}
	}
	var jobs []cloudupload.Job
	if len(ids) > 0 {
		jobs = s.m.List(ids)
	}
	writeList(w, r, jobs)
}

// getJob parses name and looks the job up; unknown or malformed names are
// ENOTFOUND "no such job".
func (s *Server) getJob(name string) (int64, cloudupload.Job, error) {
	id, ok := ParseID(name)
	if !ok {
		return 0, cloudupload.Job{}, errNoSuchJob
	}
	job, err := s.m.Get(id)
	return id, job, err
}

var errNoSuchJob = cloudupload.Errorf(cloudupload.ENOTFOUND, "no such job")

func (s *Server) job(w http.ResponseWriter, r *http.Request, name string) {
	_, job, err := s.getJob(name)
	if err == nil {
		err = checkParams(r.URL.RawQuery)
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeTagged(w, r, xmlapi.Job(job))
}

// create is POST /cloudupload: with query parameters and JSON target data
// (public route, the daemon fetches the image), or with an XML job skeleton
// (internal route, the image follows by PUT).
func (s *Server) create(w http.ResponseWriter, r *http.Request) {
	var job cloudupload.Job
	var data []byte
	var err error
	release := func() {}
	if isXML(r) || r.URL.RawQuery == "" {
		var body []byte
		if body, release, err = s.readBody(w, r, MaxSkeleton, "job skeleton", skeletonCost); err == nil {
			job, data, err = xmlapi.ParseSkeleton(body)
		}
	} else {
		job, err = jobFromQuery(r.URL.RawQuery)
		if err == nil {
			data, release, err = s.readBody(w, r, MaxTargetData, "target data", targetDataCost)
		}
	}
	if err == nil {
		job.Client, err = s.scope(r, job, data)
	}
	if err == nil {
		job, err = s.m.Create(r.Context(), job, data)
	}
	release()
	if errors.Is(err, errBusy) {
		s.failBusy(w, r)
		return
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeTagged(w, r, xmlapi.Job(job))
}

// jobFromQuery reads the public create route's parameters, each required
// exactly once.
func jobFromQuery(raw string) (cloudupload.Job, error) {
	fields := []string{"project", "repository", "arch", "package", "filename", "user", "target"}
	q, err := parseQuery(raw, fields...)
	if err != nil {
		return cloudupload.Job{}, err
	}
	for _, f := range fields {
		if len(q[f]) == 0 || q[f][0] == "" {
			return cloudupload.Job{}, cloudupload.Errorf(cloudupload.EINVALID, "parameter '%s' is missing", f)
		}
		if len(q[f]) > 1 {
			return cloudupload.Job{}, cloudupload.Errorf(cloudupload.EINVALID, "parameter '%s' set multiple times", f)
		}
	}
	return cloudupload.Job{
		Project: q.get("project"), Repository: q.get("repository"), Arch: q.get("arch"),
		Package: q.get("package"), Filename: q.get("filename"), User: q.get("user"), Target: q.get("target"),
		Origin: cloudupload.OriginFetch,
	}, nil
}

func isXML(r *http.Request) bool {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	return err == nil && (mt == "text/xml" || mt == "application/xml")
}

// put is PUT /cloudupload/<id>: the image of a job created from a skeleton.
func (s *Server) put(w http.ResponseWriter, r *http.Request, name string) {
	id, ok := ParseID(name)
	if !ok {
		s.fail(w, r, errNoSuchJob)
		return
	}
	if err := s.mayChange(r, id); err != nil {
		s.fail(w, r, err)
		return
	}
	if err := checkParams(r.URL.RawQuery); err != nil {
		s.fail(w, r, err)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.bodyWait)
	ok = s.receives.acquire(ctx, 1)
	cancel()
	if !ok {
		s.failBusy(w, r)
		return
	}
	defer s.receives.release(1)
	// A chunked body (ContentLength -1) is taken as OBS took it: the job's
	// size from the skeleton says how many bytes must arrive.
	body := &interruptibleBody{ReadCloser: r.Body, rc: http.NewResponseController(w)}
	if err := s.m.Receive(r.Context(), id, body, r.ContentLength); err != nil {
		s.fail(w, r, err)
		return
	}
	writeXML(w, xmlapi.OK())
}

// interruptibleBody is a PUT's body that the backend can interrupt (see
// backend.Interrupter): a read blocked on a stalled sender then returns at
// once, and the connection is closed with the error response.
type interruptibleBody struct {
	io.ReadCloser
	rc *http.ResponseController
}

func (b *interruptibleBody) Interrupt() {
	b.rc.SetReadDeadline(time.Unix(1, 0))
}

// command is POST /cloudupload/<id>: cmd=kill or command=kill, in the query
// or a form body. Without a command it answers the job's document, as
// OBS's server did.
func (s *Server) command(w http.ResponseWriter, r *http.Request, name string) {
	id, job, err := s.getJob(name)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	q, err := parseQuery(r.URL.RawQuery, "cmd", "command")
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt == "application/x-www-form-urlencoded" {
		body, release, err := s.readBody(w, r, maxForm, "form", formCost)
		if errors.Is(err, errBusy) {
			s.failBusy(w, r)
			return
		} else if err != nil {
			s.fail(w, r, err)
			return
		}
		f, err := parseQuery(string(body), "cmd", "command")
		release()
		if err != nil {
			s.fail(w, r, err)
			return
		}
		for k, v := range f {
			q[k] = append(q[k], v...)
		}
	}
	cmds := append(q["cmd"], q["command"]...)
	switch {
	case len(cmds) == 0:
		writeXML(w, xmlapi.Job(job))
		return
	case len(cmds) > 1:
		err = cloudupload.Errorf(cloudupload.EINVALID, "parameter 'cmd' set multiple times")
	case cmds[0] != "kill":
		err = cloudupload.Errorf(cloudupload.EINVALID, "unknown command %q", truncate(cmds[0]))
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if err := s.mayChange(r, id); err != nil {
		s.fail(w, r, err)
		return
	}
	if err := s.m.Kill(r.Context(), id); err != nil {
		s.fail(w, r, err)
		return
	}
	writeXML(w, xmlapi.OK())
}

func writeXML(w http.ResponseWriter, doc []byte) {
	h := w.Header()
	h.Set("Content-Type", "text/xml")
	h.Set("Content-Length", strconv.Itoa(len(doc)))
	w.Write(doc)
}

// statusOf maps an error code to its HTTP status.
func statusOf(code string) int {
	switch code {
	case cloudupload.EINVALID, cloudupload.ECONFLICT:
		return http.StatusBadRequest
	case cloudupload.ENOTFOUND:
		return http.StatusNotFound
	case cloudupload.EFORBIDDEN:
		return http.StatusForbidden
	case cloudupload.ETOOLARGE:
		return http.StatusRequestEntityTooLarge
	case cloudupload.EUNAUTHORIZED:
		return http.StatusUnauthorized
	case cloudupload.ENOSPACE:
		return http.StatusInsufficientStorage
	case cloudupload.EUNAVAILABLE:
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

// fail answers err as a <status> document. Internal errors are logged with
// their cause and shown as "internal error".
func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	code := cloudupload.ErrorCode(err)
	status := statusOf(code)
	if status == http.StatusInternalServerError {
		s.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	} else if u := errors.Unwrap(err); u != nil {
		s.log.Warn("request refused", "method", r.Method, "path", r.URL.Path, "status", status, "err", err)
	}
	summary := cloudupload.ErrorMessage(err)
	if code == cloudupload.EINTERNAL {
		summary = "internal error"
	}
	s.failStatus(w, r, status, summary)
}

// failStatus writes the <status> document with summary as the status line's
// reason phrase, as OBS's server did. Go's http.ResponseWriter always writes
// the standard reason phrase, so on HTTP/1.x the connection is taken over to
// write the response by hand (and then closed); elsewhere (HTTP/2, tests
// with a recorder) the standard phrase is used.
func (s *Server) failStatus(w http.ResponseWriter, r *http.Request, status int, summary string) {
	doc := xmlapi.Status(status, summary)
	if rec, ok := w.(*recorder); ok {
		rec.setStatus(status)
	}
	if r.ProtoMajor == 1 && writeRaw(w, r, status, summary, doc) {
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/xml")
	h.Set("Content-Length", strconv.Itoa(len(doc)))
	h.Set("Connection", "close")
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		w.Write(doc)
	}
}

func truncate(s string) string {
	if r := []rune(s); len(r) > 40 {
		return string(r[:40]) + "…"
	}
	return s
}
