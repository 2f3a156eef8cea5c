package main

import (
	"context"
	"strings"
	"testing"

	"github.com/cloudupload/cloudupload/backend"
	"github.com/cloudupload/cloudupload/internal/pgtest"
)

// TestMigrate moves a single node's state directory into PostgreSQL: the
// jobs keep their ids and documents, finished jobs their logs, a job still
// waiting for its image goes on on the node, the id sequence continues, a
// second run changes nothing, and the directory no longer starts without
// --database.
func TestMigrate(t *testing.T) {
	e := start(t)
	done := e.create("instant")
	before := e.wait(done)
	failed := e.create("fail")
	failedDoc := e.wait(failed)
	_, _, log := e.do("GET", "/cloudupload/"+done+"/_log?nostream=1", "", "")
	code, _, body := e.do("POST", "/cloudupload", "text/xml", skeletonFor("alice", 4096, "instant"))
	if code != 200 {
		t.Fatal(body)
	}
	waiting := jobField(t, body, "name")
	e.main.Close()
	e.main = nil

	db := pgtest.URL(t)
	cluster := []string{"--config", databaseConfig(t, db), "--node", "solo", "--advertise-url", "http://127.0.0.1:1"}
	m := NewMain()
	m.Stderr = &testWriter{t: t}
	if err := m.ParseFlags(append(append([]string{}, e.args...), cluster...)); err != nil {
		t.Fatal(err)
	}
	for range 2 { // a second run imports nothing more
		if err := migrate(context.Background(), &m.Config, m.Logger); err != nil {
			t.Fatal(err)
		}
	}
	if _, ok := backend.Migrated(e.state); !ok {
		t.Fatal("the state directory is not marked as migrated")
	}

	// Without --database the directory refuses to start.
	plain := NewMain()
	plain.ParseFlags(e.args)
	if err := plain.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "start with --database") {
		plain.Close()
		t.Fatalf("start without --database: %v", err)
	}

	// On the database, as the same node.
	e.args = append(e.args, cluster...)
	e.restart()
	for name, want := range map[string]string{done: before, failed: failedDoc} {
		if _, _, got := e.do("GET", "/cloudupload/"+name, "", ""); got != want {
			t.Errorf("job %s after the migration:\n%s\nbefore:\n%s", name, got, want)
		}
	}
	if _, _, got := e.do("GET", "/cloudupload/"+done+"/_log?nostream=1", "", ""); got != log {
		t.Errorf("log after the migration %q, before %q", got, log)
	}
	if code, status, body := e.do("PUT", "/cloudupload/"+waiting, "application/octet-stream", strings.Repeat("x", 4096)); code != 200 {
		t.Fatalf("PUT of the job waiting for its image: %s %s", status, body)
	}
	if doc := e.wait(waiting); jobField(t, doc, "state") != "succeeded" {
		t.Errorf("the waiting job after the migration:\n%s", doc)
	}
	next := e.create("instant")
	if next <= waiting || len(next) < len(waiting) {
		t.Errorf("new job %s after the migration, the last before was %s", next, waiting)
	}
	if doc := e.wait(next); jobField(t, doc, "state") != "succeeded" {
		t.Errorf("a new job on the database:\n%s", doc)
	}
}
