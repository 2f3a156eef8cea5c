package pgstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloudupload/cloudupload"
	"github.com/cloudupload/cloudupload/backend"
	"github.com/cloudupload/cloudupload/backend/storetest"
	"github.com/cloudupload/cloudupload/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

var testKey = [32]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32}

func config(url, node string, lease time.Duration) Config {
	return Config{URL: url, Node: backend.NodeInfo{Name: node, URL: "http://" + node + ".test:8080"},
		Lease: lease, DataKey: testKey, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
}

func openStore(t testing.TB, cfg Config) *Store {
	t.Helper()
	s, err := Open(context.Background(), cfg)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// The conformance suite, on a new database per test.
func TestStore(t *testing.T) {
	storetest.Run(t, func(t *testing.T) storetest.Open {
		url := pgtest.URL(t)
		return func(n storetest.Node) (backend.Store, error) {
			return Open(context.Background(), config(url, n.Name, n.Lease))
		}
	})
}

// Three nodes opening an empty database at once migrate it once; opening
// again changes nothing.
func TestMigrations(t *testing.T) {
	url := pgtest.URL(t)
	var wg sync.WaitGroup
	for i := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := Open(context.Background(), config(url, fmt.Sprint("n", i), time.Minute))
			if err != nil {
				t.Errorf("open node %d: %v", i, err)
				return
			}
			s.Close()
		}()
	}
	wg.Wait()
	if n := pgtest.QueryRow[int64](t, url, "SELECT count(*) FROM schema_migrations"); n != int64(len(migrations)) {
		t.Fatalf("%d migrations recorded, want %d", n, len(migrations))
	}
	s := openStore(t, config(url, "n0", time.Minute))
	if _, err := s.NextID(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := pgtest.QueryRow[int64](t, url, "SELECT count(*) FROM schema_migrations"); n != int64(len(migrations)) {
		t.Fatalf("reopen: %d migrations recorded, want %d", n, len(migrations))
	}
	if gen := pgtest.QueryRow[int64](t, url, "SELECT gen FROM nodes WHERE name = 'n0'"); gen != 2 {
		t.Fatalf("node n0 is in generation %d after its second open, want 2", gen)
	}
	// A schema newer than the program is refused.
	pgtest.Exec(t, url, "INSERT INTO schema_migrations (version) VALUES (999)")
	_, err := Open(context.Background(), config(url, "n1", time.Minute))
	if err == nil || !strings.Contains(err.Error(), "version 999, newer than") {
		t.Fatalf("open on a newer schema: %v", err)
	}
}

// The target data is sealed in the database, only opened with the key.
func TestDataSealed(t *testing.T) {
	url := pgtest.URL(t)
	s := openStore(t, config(url, "a", time.Minute))
	ctx := context.Background()
	id, _ := s.NextID(ctx)
	secret := []byte("AKIAEXAMPLE:very-secret-key")
	if err := s.Create(ctx, cloudupload.Job{ID: id, State: cloudupload.StateCreated, User: "alice"}, secret); err != nil {
		t.Fatal(err)
	}
	raw := pgtest.QueryRow[[]byte](t, url, "SELECT data FROM jobs WHERE id = $1", id)
	if bytes.Contains(raw, secret) || bytes.Contains(raw, []byte("very-secret")) {
		t.Fatalf("the data column holds the target data in plain text: %q", raw)
	}
	if got, err := s.Data(ctx, id); err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("Data = %q, %v", got, err)
	}
	other := config(url, "b", time.Minute)
	other.DataKey[0] ^= 1
	b := openStore(t, other)
	if _, err := b.Data(ctx, id); err == nil || !strings.Contains(err.Error(), "does not open") {
		t.Fatalf("Data with another key: %v, want an error", err)
	}
	// Sealed data moved to another job does not open.
	id2, _ := s.NextID(ctx)
	if err := s.Create(ctx, cloudupload.Job{ID: id2, State: cloudupload.StateCreated, User: "bob"}, []byte("x")); err != nil {
		t.Fatal(err)
	}
	pgtest.Exec(t, url, "UPDATE jobs SET data = $1 WHERE id = $2", raw, id2)
	if _, err := s.Data(ctx, id2); err == nil {
		t.Fatal("the sealed data of one job opened as another's")
	}
}

// The URL's password never shows in an error, and bad configuration is
// named.
func TestOpenErrors(t *testing.T) {
	url := pgtest.URL(t)
	const pw = "s3cr3t-Pa55word"
	i := strings.Index(url, "@")
	j := strings.LastIndex(url[:i], ":")
	bad := url[:j+1] + pw + url[i:]
	_, err := Open(context.Background(), config(bad, "a", time.Minute))
	if err == nil {
		t.Fatal("open with a wrong password: no error")
	}
	if strings.Contains(err.Error(), pw) {
		t.Fatalf("the error shows the password: %v", err)
	}
	if !strings.Contains(err.Error(), "password") {
		t.Fatalf("the error does not say the password failed: %v", err)
	}
	t.Logf("wrong password: %v", err)
	_, err = Open(context.Background(), config("postgres://u:"+pw+"@127.0.0.1:notaport/db", "a", time.Minute))
	if err == nil || strings.Contains(err.Error(), pw) {
		t.Fatalf("open with a bad URL: %v", err)
	}
	cfg := config(url, "", time.Minute)
	if _, err := Open(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), "no node name") {
		t.Fatalf("open without a node name: %v", err)
	}
	cfg = config(url, "a", time.Minute)
	cfg.DataKey = [32]byte{}
	if _, err := Open(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), "no data key") {
		t.Fatalf("open without a data key: %v", err)
	}
	// Calls honour their context.
	s := openStore(t, config(url, "a", time.Minute))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Get(ctx, 1); !errors.Is(err, context.Canceled) {
		t.Fatalf("Get with a cancelled context: %v", err)
	}
}

// While the database is down calls fail with a clear error; once it is
// back they work again, with nothing lost.
func TestDatabaseRestart(t *testing.T) {
	srv := pgtest.NewServer(t)
	url := srv.URL(t)
	s := openStore(t, config(url, "a", time.Minute))
	ctx := context.Background()
	id, err := s.NextID(ctx)
	if err != nil {
		t.Fatal(err)
	}
	j := cloudupload.Job{ID: id, State: cloudupload.StateCreated, User: "alice"}
	if err := s.Create(ctx, j, []byte("data")); err != nil {
		t.Fatal(err)
	}
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	tctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err = s.Get(tctx, id)
	if err == nil {
		t.Fatal("Get with the database stopped: no error")
	}
	t.Logf("database down: %v", err)
	if !strings.Contains(err.Error(), fmt.Sprintf("get job %d", id)) || cloudupload.ErrorCode(err) != cloudupload.EINTERNAL {
		t.Fatalf("the error does not say what failed: %v", err)
	}
	// Once the pool has dropped its connections, calls say that the
	// database cannot be reached.
	for i := 0; !strings.Contains(fmt.Sprint(err), "failed to connect"); i++ {
		if i == 5 {
			t.Fatalf("with the database down, calls do not say it cannot be reached: %v", err)
		}
		_, err = s.Get(tctx, id)
	}
	t.Logf("database down: %v", err)
	if err := s.Renew(tctx); err == nil || errors.Is(err, backend.ErrNotHeld) {
		t.Fatalf("Renew with the database down: %v, want an error that is not ErrNotHeld", err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	got, err := s.Get(ctx, id)
	if err != nil || got != j {
		t.Fatalf("Get after the restart: %+v, %v", got, err)
	}
	if err := s.Renew(ctx); err != nil {
		t.Fatalf("Renew after the restart: %v", err)
	}
	j.State = cloudupload.StateFailed
	if err := s.Update(ctx, j); err != nil {
		t.Fatalf("Update after the restart: %v", err)
	}
}

// A second process opening the store as the same node fences the first:
// its writes are refused and Renew says why.
func TestSameNodeTwice(t *testing.T) {
	url := pgtest.URL(t)
	ctx := context.Background()
	first := openStore(t, config(url, "a", time.Minute))
	id, _ := first.NextID(ctx)
	j := cloudupload.Job{ID: id, State: cloudupload.StateCreated, User: "alice"}
	if err := first.Create(ctx, j, nil); err != nil {
		t.Fatal(err)
	}
	second := openStore(t, config(url, "a", time.Minute))
	j.State = cloudupload.StateFailed
	if err := first.Update(ctx, j); !errors.Is(err, backend.ErrNotHeld) {
		t.Fatalf("Update by the first process: %v, want ErrNotHeld", err)
	}
	err := first.Renew(ctx)
	if !errors.Is(err, backend.ErrNotHeld) || !strings.Contains(err.Error(), "same node name") {
		t.Fatalf("Renew by the first process: %v, want ErrNotHeld naming the cause", err)
	}
	if err := second.Update(ctx, j); err != nil {
		t.Fatalf("Update by the second process: %v", err)
	}
}

// Should a driver error ever quote the URL, the password is taken out of
// the message; the error still unwraps.
func TestFailRedacts(t *testing.T) {
	s := &Store{password: "hunter2"}
	inner := errors.New(`cannot parse "postgres://u:hunter2@db/x"`)
	err := s.fail(inner, "open postgresql job store")
	if strings.Contains(err.Error(), "hunter2") || !strings.Contains(err.Error(), "u:xxxxx@db") {
		t.Fatalf("error %q", err)
	}
	if !errors.Is(err, inner) {
		t.Fatal("the redacted error does not unwrap")
	}
}
