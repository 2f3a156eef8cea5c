package pgstore

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/cloudupload/cloudupload"
	"github.com/cloudupload/cloudupload/backend"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Config configures Open.
type Config struct {
	URL      string           // postgres://user:password@host/db?sslmode=…
	Node     backend.NodeInfo // this node; Name required
	Lease    time.Duration    // how long a lease lasts without Renew; default 30s
	DataKey  [32]byte         // seals the target data (AES-256-GCM); the same on every node, not zero
	MaxConns int32            // connections to the database at most; default 8
	Logger   *slog.Logger     // default slog.Default()
}

// Store is a backend.SharedStore on PostgreSQL. See the package doc.
type Store struct {
	pool     *pgxpool.Pool
	node     backend.NodeInfo
	lease    time.Duration
	gen      int64 // this node's generation, registered at Open
	aead     cipher.AEAD
	log      *slog.Logger
	password string // of the URL, kept out of every error

	lost atomic.Bool // the lease ran out: refuse every write
}

var _ backend.SharedStore = (*Store)(nil)

// Open connects to the database, migrates its schema and registers this
// node with a new generation and a fresh lease.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	start := time.Now()
	if cfg.Node.Name == "" {
		return nil, errors.New("open postgresql job store: no node name")
	}
	if cfg.DataKey == ([32]byte{}) {
		return nil, errors.New("open postgresql job store: no data key")
	}
	if cfg.Lease <= 0 {
		cfg.Lease = 30 * time.Second
	}
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = 8
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	block, err := aes.NewCipher(cfg.DataKey[:])
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	s := &Store{node: cfg.Node, lease: cfg.Lease, aead: aead, log: cfg.Logger, password: urlPassword(cfg.URL)}
	pcfg, err := pgxpool.ParseConfig(cfg.URL)
	if err != nil {
		return nil, s.fail(err, "open postgresql job store: parse the database URL")
	}
	pcfg.MaxConns = cfg.MaxConns
	if s.password == "" {
		s.password = pcfg.ConnConfig.Password
	}
	where := fmt.Sprintf("%s/%s", pcfg.ConnConfig.Host, pcfg.ConnConfig.Database)
	if s.pool, err = pgxpool.NewWithConfig(ctx, pcfg); err != nil {
		return nil, s.fail(err, "open postgresql job store at %s", where)
	}
	version, err := migrate(ctx, s.pool)
	if err == nil {
		err = s.pool.QueryRow(ctx, `INSERT INTO nodes (name, url, gen, expires) VALUES ($1, $2, 1, now() + $3::interval)
			ON CONFLICT (name) DO UPDATE SET url = excluded.url, gen = nodes.gen + 1, expires = excluded.expires
			RETURNING gen`, s.node.Name, s.node.URL, s.lease).Scan(&s.gen)
	}
	if err != nil {
		s.pool.Close()
		return nil, s.fail(err, "open postgresql job store at %s", where)
	}
	s.log.Info("postgresql job store open", "database", where, "node", s.node.Name, "generation", s.gen,
		"schema", version, "lease", s.lease, "took", time.Since(start).Round(time.Millisecond))
	return s, nil
}

func urlPassword(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.User == nil {
		return ""
	}
	p, _ := u.User.Password()
	return p
}

// fail wraps err with what was being done, with the database password
// replaced should the driver's message contain it.
func (s *Store) fail(err error, format string, args ...any) error {
	err = fmt.Errorf(format+": %w", append(args, err)...)
	if s.password != "" && strings.Contains(err.Error(), s.password) {
		return &redacted{msg: strings.ReplaceAll(err.Error(), s.password, "xxxxx"), err: err}
	}
	return err
}

// redacted is an error whose message had a secret removed; it still
// unwraps, for errors.Is.
type redacted struct {
	msg string
	err error
}

func (e *redacted) Error() string { return e.msg }
func (e *redacted) Unwrap() error { return e.err }

// Close closes the connections. The lease is left to run out: the node's
// uploads go on while it restarts, and it holds its jobs again when it
// opens the store within the lease.
func (s *Store) Close() error {
	s.pool.Close()
	return nil
}

// Node is this node.
func (s *Store) Node() backend.NodeInfo { return s.node }

// fence is true while this node's generation holds a live lease; @node and
// @gen name the node.
const fence = `EXISTS (SELECT 1 FROM nodes WHERE name = @node AND gen = @gen AND expires > now())`

// unfinished selects jobs that are not final; it matches the predicate of
// the index jobs_unfinished.
const unfinished = `state NOT IN ('succeeded', 'failed')`

func (s *Store) args(more pgx.NamedArgs) pgx.NamedArgs {
	more["node"], more["gen"] = s.node.Name, s.gen
	return more
}

// notFound is the error of a job that does not exist, with the Manager's
// message.
func notFound(id int64) error {
	return &cloudupload.Error{Code: cloudupload.ENOTFOUND, Message: "no such job", Err: fmt.Errorf("job %d", id)}
}

func (s *Store) notHeld(id int64) error {
	return fmt.Errorf("job %d, node %s: %w", id, s.node.Name, backend.ErrNotHeld)
}

// writable refuses writes once the lease was found to have run out.
func (s *Store) writable(id int64) error {
	if s.lost.Load() {
		return s.notHeld(id)
	}
	return nil
}

// missed explains a fenced write that changed no row: ENOTFOUND when job id
// does not exist, ECONFLICT when it is final, else ErrNotHeld.
func (s *Store) missed(ctx context.Context, q querier, id int64) error {
	var state string
	err := q.QueryRow(ctx, "SELECT state FROM jobs WHERE id = $1", id).Scan(&state)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return notFound(id)
	case err != nil:
		return err
	case cloudupload.State(state).Final():
		return cloudupload.Errorf(cloudupload.ECONFLICT, "job %d is final", id)
	}
	return s.notHeld(id)
}

type querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// seal encrypts the target data of job id; open decrypts it.
func (s *Store) seal(id int64, data []byte) []byte {
	nonce := make([]byte, s.aead.NonceSize(), s.aead.NonceSize()+len(data)+s.aead.Overhead())
	if _, err := io.ReadFull(rand.Reader, nonce); err != nil {
		panic(err) // crypto/rand does not fail
	}
	return s.aead.Seal(nonce, nonce, data, jobAD(id))
}

func (s *Store) open(id int64, sealed []byte) ([]byte, error) {
	n := s.aead.NonceSize()
	if len(sealed) < n {
		return nil, fmt.Errorf("target data of job %d is too short to be sealed data", id)
	}
	data, err := s.aead.Open(nil, sealed[:n], sealed[n:], jobAD(id))
	if err != nil {
		return nil, fmt.Errorf("target data of job %d does not open with this node's data key (do all nodes share the server key?)", id)
	}
	return data, nil
}

func jobAD(id int64) []byte { return binary.BigEndian.AppendUint64(nil, uint64(id)) }
