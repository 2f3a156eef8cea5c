package download

import (
	"encoding/json"
	"io/fs"
	"net/http"
	"net/url"
	"path"
	"sort"
	"strings"
	"time"

	"github.com/cloudupload/cloudupload/buildinfo"
	"github.com/cloudupload/cloudupload/targets/mirror"
)

// Entry is one line of a listing, as the JSON listing shows it.
type Entry struct {
	Name     string    `json:"name"`
	Type     string    `json:"type"`           // file | dir
	Size     int64     `json:"size,omitempty"` // files only
	Modified time.Time `json:"modified"`
	Link     string    `json:"link,omitempty"` // the target of a symlink (e.g. latest), as written
	// Access is open, licence, groups, licence+groups or denied (files
	// only; see the package comment).
	Access   string   `json:"access,omitempty"`
	Licences []string `json:"licences,omitempty"` // digests to accept
	Groups   []string `json:"groups,omitempty"`   // one of them is required
}

// Listing is the JSON form of a directory.
type Listing struct {
	Path     string                `json:"path"`
	Entries  []Entry               `json:"entries"`
	Licences map[string]LicenceDoc `json:"licences,omitempty"` // by digest
}

// LicenceDoc is a licence as the JSON listing shows it.
type LicenceDoc struct {
	Theme           string `json:"theme,omitempty"`
	Text            string `json:"text"`
	CollectUserData bool   `json:"collect_user_data"`
}

func (h *Handler) listing(r *http.Request, t *tree, rel string) (Listing, error) {
	d, err := t.root.Open(rel)
	if err != nil {
		return Listing{}, err
	}
	des, err := d.ReadDir(-1)
	d.Close()
	if err != nil {
		return Listing{}, err
	}
	ls := Listing{Path: r.URL.Path, Entries: []Entry{}}
	base := splitRel(rel)
	for _, de := range des {
		name := de.Name()
		if strings.HasPrefix(name, ".") || name == buildinfo.FileName {
			continue
		}
		e := Entry{Name: name}
		res, err := resolve(t.root, append(base[:len(base):len(base)], name))
		if err != nil {
			continue // dangling, escaping or refused: never shown
		}
		if de.Type()&fs.ModeSymlink != 0 {
			e.Link, _ = t.root.Readlink(path.Join(rel, name))
		}
		e.Modified = res.info.ModTime().UTC()
		if res.info.IsDir() {
			e.Type = "dir"
		} else {
			e.Type, e.Size = "file", res.info.Size()
			dir, file := path.Split(res.rel)
			rule := ruleFor(h.policies.policy(t.name, t.root, path.Clean("./"+dir)), file)
			e.Access = rule.access()
			for _, l := range rule.licences {
				e.Licences = append(e.Licences, l.Digest)
				if ls.Licences == nil {
					ls.Licences = map[string]LicenceDoc{}
				}
				ls.Licences[l.Digest] = LicenceDoc{Theme: l.Theme, Text: l.Text, CollectUserData: l.CollectData}
			}
			for _, g := range rule.groups {
				e.Groups = append(e.Groups, g...)
			}
		}
		ls.Entries = append(ls.Entries, e)
	}
	sort.Slice(ls.Entries, func(i, j int) bool {
		a, b := ls.Entries[i], ls.Entries[j]
		if (a.Type == "dir") != (b.Type == "dir") {
			return a.Type == "dir"
		}
		return mirror.CompareIDs(a.Name, b.Name) < 0
	})
	return ls, nil
}

func (r rule) access() string {
	switch {
	case r.denied != "":
		return "denied"
	case len(r.licences) > 0 && len(r.groups) > 0:
		return "licence+groups"
	case len(r.licences) > 0:
		return "licence"
	case len(r.groups) > 0:
		return "groups"
	}
	return "open"
}

func splitRel(rel string) []string {
	if rel == "." || rel == "" {
		return nil
	}
	return strings.Split(rel, "/")
}

func wantsJSON(r *http.Request) bool {
	if r.URL.Query().Get("format") == "json" {
		return true
	}
	accept := r.Header.Get("Accept")
	return strings.Contains(accept, "application/json") && !strings.Contains(accept, "text/html")
}

func (h *Handler) serveListing(w http.ResponseWriter, r *http.Request, t *tree, rel string) {
	ls, err := h.listing(r, t, rel)
	if err != nil {
		h.cfg.Log.Warn("listing", "tree", t.name, "dir", rel, "err", err)
		httpError(w, http.StatusNotFound, "not found")
		return
	}
	w.Header().Set("Vary", "Accept")
	if wantsJSON(r) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(ls)
		return
	}
	type row struct {
		Entry
		Href, Display, SizeText, Date, LinkHref string
	}
	var rows []row
	for _, e := range ls.Entries {
		rw := row{Entry: e, Href: "./" + url.PathEscape(e.Name), Display: e.Name, SizeText: "-", Date: e.Modified.Format("2006-01-02 15:04")}
		if e.Type == "dir" {
			rw.Href += "/"
			rw.Display += "/"
		} else {
			rw.SizeText = humanSize(e.Size)
		}
		rows = append(rows, rw)
	}
	h.page(w, http.StatusOK, "listing", map[string]any{
		"Title": r.URL.Path, "Crumbs": crumbs(r.URL.Path), "Rows": rows,
	})
}

type crumb struct{ Name, Href string }

// crumbs splits /tree/a/b/ into links to /, /tree/, /tree/a/ and /tree/a/b/.
func crumbs(p string) []crumb {
	out := []crumb{{Name: "/", Href: "/"}}
	href := "/"
	for _, s := range strings.Split(strings.Trim(p, "/"), "/") {
		if s == "" {
			continue
		}
		href += url.PathEscape(s) + "/"
		out = append(out, crumb{Name: s + "/", Href: href})
	}
	return out
}

func humanSize(n int64) string {
	const unit = 1024
	if n < unit {
		return itoa(n) + " B"
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	v := float64(n) / float64(div)
	return trimFloat(v) + " " + string("KMGTPE"[exp]) + "iB"
}

func (h *Handler) serveIndex(w http.ResponseWriter, r *http.Request) {
	if wantsJSON(r) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"trees": h.names})
		return
	}
	h.page(w, http.StatusOK, "index", map[string]any{"Title": "Download trees", "Trees": h.names, "Crumbs": crumbs("/")})
}
