package mirror

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloudupload/cloudupload/targets"
)

// checkBuild verifies a visible build directory the way a reader would:
// MANIFEST present and every file it lists present with its checksum.
func checkBuild(dir string) error {
	m, err := readManifest(filepath.Join(dir, ManifestName))
	if err != nil {
		return fmt.Errorf("build %s: %w", filepath.Base(dir), err)
	}
	if len(m) < 2 {
		return fmt.Errorf("build %s: MANIFEST lists %d files", filepath.Base(dir), len(m))
	}
	for name, want := range m {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return fmt.Errorf("build %s: %w", filepath.Base(dir), err)
		}
		if sha256.Sum256(b) != want {
			return fmt.Errorf("build %s: %s does not match its MANIFEST line", filepath.Base(dir), name)
		}
	}
	return nil
}

// A reader looping over the series while builds are published never sees
// a partial build, and links never dangle.
func TestReaderNeverSeesPartialBuild(t *testing.T) {
	e := newEnv(t, nil)
	series := filepath.Join(e.tree, "master/centos")
	const builds = 24
	stop := make(chan struct{})
	var seen, checks atomic.Int64
	var readerErr error
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for done := false; !done; {
			select {
			case <-stop:
				done = true // one last pass over the finished series
			default:
			}
			ents, err := os.ReadDir(series)
			if errors.Is(err, fs.ErrNotExist) {
				continue
			} else if err != nil {
				readerErr = err
				return
			}
			n := 0
			for _, ent := range ents {
				name := ent.Name()
				if strings.HasPrefix(name, ".") {
					continue
				}
				p := filepath.Join(series, name)
				if ent.Type()&fs.ModeSymlink != 0 {
					if _, err := os.Stat(p); err != nil {
						readerErr = fmt.Errorf("link %s dangles: %w", name, err)
						return
					}
					continue
				}
				if err := checkBuild(p); err != nil {
					readerErr = err
					return
				}
				n++
				checks.Add(1)
			}
			if int64(n) > seen.Load() {
				seen.Store(int64(n))
			}
		}
	}()
	for i := 0; i < builds; i++ {
		// Different content each time (no dedup), big enough to take a while.
		content := make([]byte, 256<<10+i)
		rand.New(rand.NewSource(int64(i))).Read(content)
		if err := os.WriteFile(e.image, content, 0o644); err != nil {
			t.Fatal(err)
		}
		e.mustUpload(fmt.Sprintf(`{"tree":"demo","series":"master/centos","build_id":"%d","links":["latest"],"area":"outputs","build_info":{"license_type":"open"}}`, i))
	}
	close(stop)
	wg.Wait()
	if readerErr != nil {
		t.Fatal(readerErr)
	}
	if seen.Load() != builds || checks.Load() < builds {
		t.Fatalf("reader saw at most %d builds in %d checks", seen.Load(), checks.Load())
	}
}

// Many jobs publishing build ids in random order: latest never dangles,
// never moves backwards, ends at the newest successful build, and failed
// builds never get it.
func TestLatestOnlyForwardUnderConcurrency(t *testing.T) {
	e := newEnv(t, []byte("same bytes in every build"))
	series := filepath.Join(e.tree, "s")
	if err := os.MkdirAll(series, 0o755); err != nil {
		t.Fatal(err)
	}
	const n = 40
	ids := rand.Perm(n)
	fail := func(id int) bool { return id%7 == 3 } // 38 fails, so the newest successful is 39
	stop := make(chan struct{})
	var watchErr error
	var observed atomic.Int64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		last := ""
		for {
			select {
			case <-stop:
				return
			default:
			}
			target, err := os.Readlink(filepath.Join(series, "latest"))
			if errors.Is(err, fs.ErrNotExist) {
				if last != "" {
					watchErr = fmt.Errorf("latest disappeared after pointing at %s", last)
					return
				}
				continue
			} else if err != nil {
				watchErr = err
				return
			}
			if _, err := os.Stat(filepath.Join(series, "latest", ManifestName)); err != nil {
				watchErr = fmt.Errorf("latest -> %s dangles: %w", target, err)
				return
			}
			if b, _ := os.ReadFile(filepath.Join(series, "latest", ResultName)); string(b) != "success\n" {
				watchErr = fmt.Errorf("latest -> %s, a build with result %q", target, b)
				return
			}
			if last != "" && CompareIDs(target, last) < 0 {
				watchErr = fmt.Errorf("latest moved backwards: %s -> %s", last, target)
				return
			}
			last = target
			observed.Add(1)
		}
	}()
	work := make(chan int)
	var pubErr error
	var mu sync.Mutex
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for id := range work {
				result := "success"
				if fail(id) {
					result = "fail"
				}
				data := fmt.Sprintf(`{"tree":"demo","series":"s","build_id":"%d","result":%q,"links":["latest","lastSuccessful"]}`, id, result)
				_, err := New().Upload(context.Background(), targets.Request{
					Job: e.job, Data: []byte(data), Image: fileImage{e.image},
					Log: targets.NewLog(discard{}), Getenv: e.getenv,
				})
				if err != nil {
					mu.Lock()
					pubErr = err
					mu.Unlock()
				}
			}
		}()
	}
	for _, id := range ids {
		work <- id
	}
	close(work)
	// Wait for the publishers, then stop the watcher.
	for {
		builds, _ := ListBuilds(series)
		if len(builds) == n || pubErr != nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	if pubErr != nil {
		t.Fatal(pubErr)
	}
	if watchErr != nil {
		t.Fatal(watchErr)
	}
	for _, l := range []string{"latest", "lastSuccessful"} {
		if target, _ := os.Readlink(filepath.Join(series, l)); target != "39" {
			t.Errorf("%s -> %q at the end, want 39", l, target)
		}
	}
	if observed.Load() == 0 {
		t.Fatal("watcher never saw latest")
	}
	// Every build is complete and deduplicated against an earlier one
	// (same bytes), except the first to be published.
	builds, _ := ListBuilds(series)
	inodes := map[uint64]int{}
	for _, b := range builds {
		sha256sumCheck(t, b.Dir)
		st, _ := os.Stat(filepath.Join(b.Dir, "image.raw.xz"))
		inodes[inode(st)]++
	}
	if len(inodes) != 1 {
		t.Errorf("%d distinct copies of one unchanged file, want 1 (dedup)", len(inodes))
	}
	assertNoHidden(t, series)
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
