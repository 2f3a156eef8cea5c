package download

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/chromedp"
)

// chromiumPath finds Debian's chromium; the test fails without it
// (make test installs it through scripts/ensure-test-deps.sh).
func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("chromium not found: install Debian's chromium package (make test-deps does)")
	return ""
}

// newBrowser starts headless Chromium with a fresh profile, as root
// without network needs it.
func newBrowser(t *testing.T) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath(t)),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-component-update", true),
	)
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelB := chromedp.NewContext(actx)
	ctx, cancelT := context.WithTimeout(ctx, 90*time.Second)
	t.Cleanup(func() { cancelT(); cancelB(); cancelA() })
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return ctx
}

// downloads records the downloads the browser completes, in a directory
// where each file is named by its download's guid.
type downloads struct {
	dir  string
	mu   sync.Mutex
	name map[string]string // guid → suggested file name
	ch   chan string       // guids as they complete
}

// listen subscribes to the browser's download events and sends them to
// the download directory.
func (d *downloads) listen(t *testing.T, ctx context.Context) {
	t.Helper()
	begin := chromedp.BrowserEvents(ctx, browser.DownloadWillBegin)
	progress := chromedp.BrowserEvents(ctx, browser.DownloadProgress)
	go func() {
		for ev, err := range begin {
			if err != nil {
				return
			}
			d.mu.Lock()
			d.name[ev.GUID] = ev.SuggestedFilename
			d.mu.Unlock()
		}
	}()
	go func() {
		for ev, err := range progress {
			if err != nil {
				return
			}
			if ev.State == browser.DownloadProgressStateCompleted {
				d.ch <- ev.GUID
			}
		}
	}()
	_, err := chromedp.CallBrowser(ctx, browser.SetDownloadBehavior, browser.SetDownloadBehaviorParams{
		Behavior: browser.SetDownloadBehaviorBehaviorAllowAndName, DownloadPath: d.dir, EventsEnabled: new(true),
	})
	if err != nil {
		t.Fatalf("set the download behaviour: %v", err)
	}
}

// wait returns the name and content of the next completed download.
func (d *downloads) wait(t *testing.T) (string, string) {
	t.Helper()
	select {
	case guid := <-d.ch:
		b, err := os.ReadFile(filepath.Join(d.dir, guid))
		if err != nil {
			t.Fatal(err)
		}
		// The begin event, which names the download, comes on another
		// stream than its completion: it may be handled a moment later.
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			d.mu.Lock()
			name, ok := d.name[guid]
			d.mu.Unlock()
			if ok || time.Now().After(deadline) {
				return name, string(b)
			}
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no download completed")
	}
	return "", ""
}

func (d *downloads) count() int {
	ents, _ := os.ReadDir(d.dir)
	return len(ents)
}

// TestBrowser drives headless Chromium: open a listing, follow a protected
// file, see the licence, decline (no file), accept (the file arrives), and
// a second file under the same licence downloads without asking again.
func TestBrowser(t *testing.T) {
	f := newFixture(t, nil)
	ctx := newBrowser(t)
	dl := &downloads{dir: t.TempDir(), name: map[string]string{}, ch: make(chan string, 4)}
	dl.listen(t, ctx)
	text := func(sel string) string {
		t.Helper()
		v, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
		if err != nil {
			t.Fatalf("text of %s: %v", sel, err)
		}
		return v
	}
	do := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(ctx, steps...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	do("open the listing", chromedp.Navigate(f.srv.URL+"/t/prot/"))
	if listing := text("table"); !strings.Contains(listing, "one.img") || !strings.Contains(listing, "licence") || strings.Contains(listing, "BUILD-INFO") {
		t.Errorf("listing text: %q", listing)
	}
	do("follow the protected file",
		chromedp.Click(chromedp.CSS(`a[href="./one.img"]`)),
		chromedp.WaitVisible(chromedp.CSS(".licence-text")))
	title, err := chromedp.Run(ctx, chromedp.Title())
	if err != nil {
		t.Fatal(err)
	}
	if licence := text(".licence-text"); title != "Licence: one.img" || !strings.Contains(licence, "ACME end-user licence") || !strings.Contains(licence, "<script>alert(1)</script>") {
		t.Errorf("licence page: title %q, text %q (the script must show as text)", title, licence)
	}
	do("decline",
		chromedp.Click(chromedp.CSS("button.decline")),
		chromedp.WaitVisible(chromedp.CSS(`main a[href="/t/prot/"]`)))
	if declined := text("main"); !strings.Contains(declined, "one.img was not downloaded") {
		t.Errorf("after decline: %q", declined)
	}
	time.Sleep(200 * time.Millisecond)
	if n := dl.count(); n != 0 {
		t.Fatalf("declining downloaded %d files", n)
	}

	// Back to the file, accept: the file arrives.
	do("accept",
		chromedp.Navigate(f.srv.URL+"/t/prot/one.img"),
		chromedp.WaitVisible(chromedp.CSS("button.accept")),
		chromedp.Click(chromedp.CSS("button.accept")))
	if name, content := dl.wait(t); name != "one.img" || content != "content of one.img" {
		t.Errorf("after accept: downloaded %q holding %q", name, content)
	}

	// The second file under the same licence: straight from the listing.
	do("second file",
		chromedp.Navigate(f.srv.URL+"/t/prot/"),
		chromedp.WaitVisible(chromedp.CSS(`a[href="./two.img"]`)),
		chromedp.Click(chromedp.CSS(`a[href="./two.img"]`)))
	if name, content := dl.wait(t); name != "two.img" || content != "content of two.img" {
		t.Errorf("second file: downloaded %q holding %q", name, content)
	}
	log := f.access.String()
	for _, want := range []string{
		`"POST /t/prot/one.img HTTP/1.1" 200`, "licence=declined",
		`"POST /t/prot/one.img HTTP/1.1" 303`, "licence=accepted:form",
		`"GET /t/prot/two.img HTTP/1.1" 200`,
	} {
		if !strings.Contains(log, want) {
			t.Errorf("access log lacks %q:\n%s", want, log)
		}
	}
	if strings.Contains(log, `"GET /t/prot/two.img HTTP/1.1" 403`) {
		t.Errorf("the second file asked for the licence again:\n%s", log)
	}
}
