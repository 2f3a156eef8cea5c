package download

import (
	"bytes"
	"html"
	"html/template"
	"net/http"
	"path"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// pageCSP: the pages run no script and load nothing from elsewhere, so
// even a licence text that slipped markup through cannot act.
const pageCSP = "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

const css = `
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
header{background:#1d2330;color:#fff;padding:.8em 1.5em}
header a{color:#fff;text-decoration:none}
main{max-width:64em;margin:1.5em auto;padding:0 1.5em}
table{border-collapse:collapse;width:100%;background:#fff;box-shadow:0 1px 2px #0002}
th,td{text-align:left;padding:.35em .8em;border-bottom:1px solid #e4e7ec;white-space:nowrap}
th{background:#eef0f4;font-weight:600}
td.size{text-align:right;font-variant-numeric:tabular-nums}
td.name{white-space:normal;word-break:break-all}
a{color:#1557c0}
.link{color:#6b7280}
.tag{font-size:.8em;padding:.1em .5em;border-radius:.8em;background:#e4e7ec}
.tag.licence,.tag.licence\+groups{background:#fde7c4}.tag.groups{background:#dbe7fb}.tag.denied{background:#f6d3d3}
.licence-text{background:#fff;border:1px solid #d5d9e0;padding:1em 1.5em;max-height:28em;overflow:auto}
form .buttons{margin-top:1.2em}
button{font:inherit;padding:.5em 1.4em;margin-right:.8em;border-radius:.3em;border:1px solid #1557c0;cursor:pointer}
button.accept{background:#1557c0;color:#fff}button.decline{background:#fff;color:#1557c0}
label{display:block;margin:.6em 0 .2em}input[type=text],input[type=email]{font:inherit;padding:.3em;width:22em}
.error{color:#a11;font-weight:600}
`

var pages = template.Must(template.New("").Parse(`
{{define "head"}}<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{.Title}}</title><style>` + css + `</style>{{with .ExtraCSS}}<style>{{.}}</style>{{end}}</head>
{{end}}
{{define "crumbs"}}<header>{{range .Crumbs}}<a href="{{.Href}}">{{.Name}}</a>{{end}}</header>{{end}}

{{define "index"}}{{template "head" .}}<body>{{template "crumbs" .}}<main><h1>Download trees</h1>
<ul>{{range .Trees}}<li><a href="/{{.}}/">{{.}}/</a></li>{{end}}</ul></main></body></html>{{end}}

{{define "listing"}}{{template "head" .}}<body>{{template "crumbs" .}}<main>
<h1>Index of {{.Title}}</h1>
<table><thead><tr><th>Name</th><th>Size</th><th>Last modified (UTC)</th><th>Access</th></tr></thead><tbody>
<tr><td class="name"><a href="../">../</a></td><td></td><td></td><td></td></tr>
{{range .Rows}}<tr><td class="name"><a href="{{.Href}}">{{.Display}}</a>{{if .Link}} <span class="link">→ {{.Link}}</span>{{end}}</td>
<td class="size">{{.SizeText}}</td><td>{{.Date}}</td><td>{{if .Access}}<span class="tag {{.Access}}">{{.Access}}</span>{{end}}</td></tr>
{{end}}</tbody></table></main></body></html>{{end}}

{{define "licence"}}{{template "head" .}}<body class="{{.Theme}}">{{template "crumbs" .}}<main class="licence">
<h1>Licence for {{.File}}</h1>
<p>Please read the licence below. The file is downloaded once you accept it; you will not be asked again for files under the same licence.</p>
{{range .Licences}}<div class="licence-text">{{.HTML}}</div>{{end}}
<form method="post" action="{{.Action}}">
<input type="hidden" name="licences" value="{{.Digests}}"><input type="hidden" name="token" value="{{.Token}}"><input type="hidden" name="expires" value="{{.Expires}}">
{{if .Collect}}<p>The publisher records who downloads this file.</p>
<label for="name">Name</label><input type="text" id="name" name="name" value="{{.Name}}" maxlength="200">
<label for="email">E-mail address</label><input type="email" id="email" name="email" value="{{.Email}}" maxlength="254">{{end}}
{{if .Error}}<p class="error">{{.Error}}</p>{{end}}
<div class="buttons"><button class="accept" type="submit" name="action" value="accept">Accept</button><button class="decline" type="submit" name="action" value="decline">Decline</button></div>
</form>
<p class="script-hint">Scripts: send the header <code>X-Accept-License: {{.Digests}}</code>.</p>
</main></body></html>{{end}}

{{define "declined"}}{{template "head" .}}<body>{{template "crumbs" .}}<main>
<h1>Licence declined</h1><p>{{.File}} was not downloaded.</p><p><a href="{{.Back}}">Back to the listing</a></p></main></body></html>{{end}}
`))

func (h *Handler) page(w http.ResponseWriter, code int, name string, data map[string]any) {
	var b bytes.Buffer
	data["ExtraCSS"] = template.CSS(h.cfg.ThemeCSS)
	if err := pages.ExecuteTemplate(&b, name, data); err != nil {
		h.cfg.Log.Error("render page", "page", name, "err", err)
		httpError(w, http.StatusInternalServerError, "internal error")
		return
	}
	hd := w.Header()
	hd.Set("Content-Type", "text/html; charset=utf-8")
	hd.Set("Content-Security-Policy", pageCSP)
	hd.Set("Referrer-Policy", "same-origin")
	w.WriteHeader(code)
	if code != http.StatusNotModified {
		w.Write(b.Bytes())
	}
}

type licenceView struct{ HTML template.HTML }

// licencePage answers a request for a file whose licences are not all
// accepted: the licence page for browsers, a short explanation naming the
// digests for scripts.
func (h *Handler) licencePage(w http.ResponseWriter, r *http.Request, missing []Licence, errMsg string, code int) {
	var digests []string
	collect := false
	theme := ""
	var views []licenceView
	for _, l := range missing {
		digests = append(digests, l.Digest)
		collect = collect || l.CollectData
		if theme == "" && l.Theme != "" {
			theme = "theme-" + themeClass(l.Theme)
		}
		views = append(views, licenceView{HTML: licenceHTML(l.Text)})
	}
	joined := strings.Join(digests, ",")
	w.Header().Set("Vary", "Accept")
	if !strings.Contains(r.Header.Get("Accept"), "text/html") {
		w.Header().Set(AcceptHeader, joined)
		msg := "forbidden: this file is under a licence that has not been accepted.\n" +
			"Read it in the JSON listing of the directory (?format=json, \"licences\"), then repeat the request with the header\n" +
			AcceptHeader + ": " + joined + "\n"
		if collect {
			msg += "and the headers " + NameHeader + " and " + EmailHeader + " (the publisher records who downloads it).\n"
		}
		if errMsg != "" {
			msg = errMsg + "\n" + msg
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Del("ETag")
		w.Header().Del("Last-Modified")
		w.WriteHeader(code)
		if r.Method != http.MethodHead {
			w.Write([]byte(msg))
		}
		return
	}
	exp := time.Now().Add(formLife).Unix()
	h.page(w, code, "licence", map[string]any{
		"Title": "Licence: " + path.Base(r.URL.Path), "Crumbs": crumbs(path.Dir(r.URL.Path)), "File": path.Base(r.URL.Path),
		"Theme": theme, "Licences": views, "Action": r.URL.EscapedPath(), "Digests": joined,
		"Token": h.formToken(r.URL.Path, digests, exp), "Expires": strconv.FormatInt(exp, 10),
		"Collect": collect, "Error": errMsg, "Name": r.PostFormValue("name"), "Email": r.PostFormValue("email"),
	})
}

// acceptForm handles the Accept and Decline buttons of the licence page.
func (h *Handler) acceptForm(w http.ResponseWriter, r *http.Request, lw *logWriter, id identity, t *tree, dir, name string) {
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	if err := r.ParseForm(); err != nil {
		httpError(w, http.StatusBadRequest, "bad form")
		return
	}
	digests := strings.Split(r.PostFormValue("licences"), ",")
	if !h.checkForm(r.URL.Path, digests, r.PostFormValue("token"), r.PostFormValue("expires"), time.Now()) {
		lw.licence = "bad-form"
		httpError(w, http.StatusForbidden, "forbidden: the form has expired or does not come from this server; reload the file's page")
		return
	}
	if r.PostFormValue("action") != "accept" {
		lw.licence = "declined"
		h.page(w, http.StatusOK, "declined", map[string]any{
			"Title": "Licence declined", "Crumbs": crumbs(path.Dir(r.URL.Path)), "File": path.Base(r.URL.Path), "Back": path.Dir(r.URL.Path) + "/",
		})
		return
	}
	rule := ruleFor(h.policies.policy(t.name, t.root, dir), name)
	if rule.denied != "" {
		lw.licence = "denied"
		httpError(w, http.StatusForbidden, "forbidden: this file is not published for download")
		return
	}
	var accept []Licence
	for _, l := range rule.licences {
		for _, d := range digests {
			if d == l.Digest {
				accept = append(accept, l)
			}
		}
	}
	if len(accept) != len(rule.licences) {
		// The licence changed since the page was shown.
		lw.licence = "required"
		h.licencePage(w, r, rule.licences, "The licence has changed; please read it again.", http.StatusConflict)
		return
	}
	var records []userData
	for _, l := range accept {
		if !l.CollectData {
			continue
		}
		nm, em, err := checkUserData(r.PostFormValue("name"), r.PostFormValue("email"))
		if err != nil {
			lw.licence = "missing-user-data"
			h.licencePage(w, r, accept, err.Error(), http.StatusBadRequest)
			return
		}
		records = append(records, h.userRecord(r, id, l, nm, em))
	}
	if len(records) > 0 {
		if err := h.recordUserData(records); err != nil {
			h.cfg.Log.Error("user data not recorded", "err", err)
			httpError(w, http.StatusServiceUnavailable, "the acceptance could not be recorded; try again later")
			return
		}
	}
	var prev [][digestPrefix]byte
	if c, err := r.Cookie(CookieName); err == nil {
		prev = h.readCookie(c.Value, time.Now())
	}
	var add []string
	for _, l := range accept {
		add = append(add, l.Digest)
	}
	http.SetCookie(w, h.licenceCookie(r, prev, add, time.Now()))
	lw.licence = "accepted:form"
	http.Redirect(w, r, r.URL.EscapedPath(), http.StatusSeeOther)
}

func themeClass(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '-', r == '_':
			return r
		case r >= 'A' && r <= 'Z':
			return r + 'a' - 'A'
		}
		return '-'
	}, s)
}

// simpleTag matches the markup a licence text may keep: a few structural
// tags without attributes. Everything else is shown as text.
var simpleTag = regexp.MustCompile(`(?i)&lt;(/?)(p|br|b|i|em|strong|u|ul|ol|li|h[1-4]|pre|code|hr|blockquote)\s*/?&gt;`)

// licenceHTML turns a License-Text (HTML written by a publisher) into safe
// markup: everything is escaped, then the simple tags are restored.
func licenceHTML(text string) template.HTML {
	esc := html.EscapeString(text)
	return template.HTML(simpleTag.ReplaceAllStringFunc(esc, func(m string) string {
		sub := simpleTag.FindStringSubmatch(m)
		return "<" + sub[1] + strings.ToLower(sub[2]) + ">"
	}))
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

func trimFloat(v float64) string { return strconv.FormatFloat(v, 'f', 1, 64) }
