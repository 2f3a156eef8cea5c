package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
)

// browser starts headless Chromium (Debian's chromium, which make test
// installs) with a fresh profile and no network beyond loopback, and
// returns a tab's context. The test fails when Chromium is missing.
func browser(t *testing.T) context.Context {
	t.Helper()
	var path string
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			path = p
			break
		}
	}
	if path == "" {
		t.Fatal("the dashboard test needs Chromium: apt-get install chromium (make test-deps does it)")
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path), chromedp.UserDataDir(t.TempDir()),
		chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun, chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.WindowSize(1280, 800),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(actx)
	ctx, cancelTimeout := context.WithTimeout(ctx, 90*time.Second)
	t.Cleanup(func() { cancelTimeout(); cancelTab(); cancelAlloc() })
	// Start the browser, and accept confirm() dialogs (the kill button asks).
	if err := chromedp.Listen(ctx, func(ev any) {
		if _, ok := ev.(*page.EventJavascriptDialogOpening); ok {
			go chromedp.Call(ctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: true})
		}
	}); err != nil {
		t.Fatalf("start %s: %v", path, err)
	}
	return ctx
}

// until evaluates the JavaScript expression js until it is true.
func until(t *testing.T, ctx context.Context, what, js string) {
	t.Helper()
	for {
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](js))
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if ok {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s", what)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func number(t *testing.T, ctx context.Context, js string) float64 {
	t.Helper()
	n, err := chromedp.Run(ctx, chromedp.Evaluate[float64](js))
	if err != nil {
		t.Fatalf("%s: %v", js, err)
	}
	return n
}

// The dashboard in a real browser: it shows a running job's progress
// increase and its log grow without a reload, kills it with the token the
// server requires (asked for in the page), and shows it end failed/killed.
func TestDashboard(t *testing.T) {
	tokenFile := filepath.Join(t.TempDir(), "token")
	os.WriteFile(tokenFile, []byte("s3cret-token\n"), 0o600)
	e := start(t, "--token-file", tokenFile)
	ctx := browser(t)
	create := func(mode string) string {
		code, _, body := e.do("POST", query, "application/octet-stream", mode, "Authorization", "Bearer s3cret-token")
		if code != 200 {
			t.Fatalf("create: %s", body)
		}
		return jobField(t, body, "name")
	}
	name := create("progress")
	done := create("instant")
	e.wait(done)

	row := `document.querySelector('tr[data-job="` + name + `"]')`
	bar := row + `.querySelector('[role=progressbar]')`
	if err := chromedp.Do(ctx,
		chromedp.Navigate(e.url+"/ui/"),
		chromedp.WaitVisible(chromedp.CSS(`#jobs tbody tr`)),
		// A reload would lose this.
		chromedp.Evaluate[chromedp.Void](`window.notReloaded = true`),
	); err != nil {
		t.Fatal(err)
	}
	until(t, ctx, "the running job's progress bar", bar+` !== null`)
	first := number(t, ctx, `Number(`+bar+`.getAttribute('aria-valuenow'))`)
	until(t, ctx, "the progress to increase", `Number(`+bar+`.getAttribute('aria-valuenow')) > `+strconv.FormatFloat(first, 'f', -1, 64))
	until(t, ctx, "the rate under the bar", row+`.textContent.includes('/s')`)
	until(t, ctx, "the finished job", `document.querySelector('tr[data-job="`+done+`"] .state.succeeded') !== null`)

	// The filter.
	if err := chromedp.Do(ctx, chromedp.SendKeys(chromedp.ID(`filter-text`), "no-such-job")); err != nil {
		t.Fatal(err)
	}
	until(t, ctx, "the filter to hide every job", `!document.getElementById('empty').hidden && document.querySelectorAll('#jobs tbody tr').length === 0`)
	if err := chromedp.Do(ctx, chromedp.Evaluate[chromedp.Void](`
		document.getElementById('filter-text').value = '';
		document.getElementById('filter-state').value = 'active';
		document.getElementById('filter-state').dispatchEvent(new Event('change'))`)); err != nil {
		t.Fatal(err)
	}
	until(t, ctx, "the state filter", `document.querySelectorAll('#jobs tbody tr').length === 1 && `+row+` !== null`)

	// The job's page: its log grows.
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`tr[data-job="`+name+`"] a`)),
		chromedp.WaitVisible(chromedp.ID(`job-view`))); err != nil {
		t.Fatal(err)
	}
	until(t, ctx, "the log", `document.getElementById('log').textContent.includes('step ')`)
	logLen := number(t, ctx, `document.getElementById('log').textContent.length`)
	until(t, ctx, "the log to grow", `document.getElementById('log').textContent.length > `+strconv.FormatFloat(logLen, 'f', -1, 64))
	until(t, ctx, "the job's fields", `document.querySelector('dd[data-field=bytestotal]') !== null`)

	// Kill: the server wants a token, the page asks for it.
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.ID(`kill`)),
		chromedp.WaitVisible(chromedp.ID(`token-form`)),
		chromedp.SendKeys(chromedp.ID(`token`), "s3cret-token"),
		chromedp.Click(chromedp.CSS(`#token-form button[type=submit]`)),
	); err != nil {
		t.Fatal(err)
	}
	until(t, ctx, "the job to end failed/killed",
		`document.querySelector('#job-state .state').textContent === 'failed' && document.getElementById('job-details').textContent === 'killed'`)
	until(t, ctx, "the kill button to go", `document.getElementById('kill').hidden`)
	if doc := e.getDoc(name); jobField(t, doc, "state") != "failed" || jobField(t, doc, "details") != "killed" {
		t.Errorf("the server's job:\n%s", doc)
	}

	// No reload happened; the token is in sessionStorage, not in the URL;
	// no server path is shown.
	notReloaded := number(t, ctx, `window.notReloaded === true ? 1 : 0`) == 1
	url, err := chromedp.Run(ctx, chromedp.Location())
	if err != nil {
		t.Fatal(err)
	}
	token, err := chromedp.Run(ctx, chromedp.Evaluate[string](`sessionStorage.getItem('cloudupload-token') || ""`))
	if err != nil {
		t.Fatal(err)
	}
	text, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body.innerText`))
	if err != nil {
		t.Fatal(err)
	}
	if !notReloaded {
		t.Error("the page was reloaded")
	}
	if token != "s3cret-token" || strings.Contains(url, "s3cret") {
		t.Errorf("token %q, URL %q", token, url)
	}
	if strings.Contains(text, e.state) || strings.Contains(text, "/tmp/") {
		t.Errorf("the page shows a server path:\n%s", text)
	}

	// On a phone the list is one card per job.
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(390, 800)); err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(ctx, chromedp.Evaluate[chromedp.Void](`
		document.getElementById('filter-state').value = '';
		location.hash = '#/'`)); err != nil {
		t.Fatal(err)
	}
	until(t, ctx, "the list", `document.querySelectorAll('#jobs tbody tr').length > 0`)
	until(t, ctx, "the phone layout", `getComputedStyle(document.querySelector('#jobs thead')).display === 'none' && document.documentElement.scrollWidth <= 390`)
	if out := os.Getenv("CLOUDUPLOAD_UI_SCREENSHOT"); out != "" {
		screenshot(t, ctx, e, out, create)
	}
}

// screenshot saves a picture of the dashboard for the README, with a few
// jobs in several states: CLOUDUPLOAD_UI_SCREENSHOT=docs/dashboard.png
// go test -run TestDashboard ./cmd/cloudupload-server.
func screenshot(t *testing.T, ctx context.Context, e *env, out string, create func(string) string) {
	create("fail")
	running := []string{create("progress"), create("progress")}
	defer func() {
		for _, name := range running { // uploaders outlive the daemon
			e.do("POST", "/cloudupload/"+name+"?cmd=kill", "", "", "Authorization", "Bearer s3cret-token")
		}
	}()
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(1100, 520), chromedp.Navigate(e.url+"/ui/"),
		chromedp.WaitVisible(chromedp.CSS(`#jobs tbody tr`))); err != nil {
		t.Fatal(err)
	}
	until(t, ctx, "the running jobs", `document.querySelectorAll('#jobs .rate').length >= 2`)
	time.Sleep(3 * time.Second)
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(out, png, 0o644); err != nil {
		t.Fatal(err)
	}
}
