package azure

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloudupload/cloudupload/targets/azuretest"
)

// Identities the fake knows; test values, not secrets.
const (
	testTenant       = "11111111-2222-3333-4444-555555555555"
	testSubscription = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
	testClientID     = "0c5f5d2e-7a1b-4c3d-9e8f-123456789abc"
	testSecret       = "s3cr3t~Value.Of-The_Principal"
	testGroup        = "images-rg"
	testLocation     = "westeurope"
)

// call is one request the fake received.
type call struct {
	Method, Path string
	Query        url.Values
	Body         map[string]any
	Form         url.Values // token requests
	Auth         bool       // carried a bearer token
}

// fakeAzure answers Azure AD (OpenID configuration, client-credential
// tokens) and ARM (subscription challenge, storage accounts and listKeys,
// managed images, gallery image definitions and versions, long-running
// operations) over HTTPS on loopback, and records every request.
type fakeAzure struct {
	t   *testing.T
	URL string

	mu        sync.Mutex
	calls     []call
	resources map[string]map[string]any // ARM id (lower case) → resource
	ops       map[string]*operation
	nextOp    int

	// Behaviour the test sets.
	denyStorage bool           // storage tokens Azurite refuses: the target must use listKeys
	throttle    map[string]int // "PUT images" → how many 429s to answer first
	failOp      map[string]string
	pollsPerOp  int // InProgress answers before the operation ends
	storageKey  string
}

type operation struct {
	id       string // the resource the operation makes or deletes
	polls    int
	fail     string // error code when it fails
	deleting bool
}

func startFake(t *testing.T, ca *azuretest.CA) *fakeAzure {
	f := &fakeAzure{t: t, resources: map[string]map[string]any{}, ops: map[string]*operation{},
		throttle: map[string]int{}, failOp: map[string]string{}, pollsPerOp: 1, storageKey: azuretest.Key}
	f.URL = ca.Serve(t, f)
	f.addResource(storageAccountID(azuretest.Account), map[string]any{"name": azuretest.Account, "location": testLocation, "kind": "StorageV2"})
	return f
}

func rgID() string {
	return "/subscriptions/" + testSubscription + "/resourceGroups/" + testGroup
}

func storageAccountID(account string) string {
	return rgID() + "/providers/Microsoft.Storage/storageAccounts/" + account
}

func imageID(name string) string {
	return rgID() + "/providers/Microsoft.Compute/images/" + name
}

func galleryImageID(gallery, def string) string {
	return rgID() + "/providers/Microsoft.Compute/galleries/" + gallery + "/images/" + def
}

func (f *fakeAzure) addResource(id string, r map[string]any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	r["id"] = id
	f.resources[strings.ToLower(id)] = r
}

func (f *fakeAzure) resource(id string) map[string]any {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.resources[strings.ToLower(id)]
}

// Calls returns the recorded requests matching method and a path regexp.
func (f *fakeAzure) Calls(method, pathRE string) []call {
	re := regexp.MustCompile(pathRE)
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []call
	for _, c := range f.calls {
		if (method == "" || c.Method == method) && re.MatchString(c.Path) {
			out = append(out, c)
		}
	}
	return out
}

func (f *fakeAzure) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	c := call{Method: r.Method, Path: r.URL.Path, Query: r.URL.Query(), Auth: strings.HasPrefix(r.Header.Get("Authorization"), "Bearer ")}
	if strings.HasSuffix(r.URL.Path, "/oauth2/v2.0/token") {
		c.Form, _ = url.ParseQuery(string(body))
	} else if len(body) > 0 {
		json.Unmarshal(body, &c.Body)
	}
	f.mu.Lock()
	f.calls = append(f.calls, c)
	f.mu.Unlock()

	p := r.URL.Path
	switch {
	case strings.HasSuffix(p, "/v2.0/.well-known/openid-configuration"):
		tenant := strings.Split(strings.Trim(p, "/"), "/")[0]
		base := f.URL + "/" + tenant
		writeJSON(w, 200, map[string]any{
			"token_endpoint":                base + "/oauth2/v2.0/token",
			"authorization_endpoint":        base + "/oauth2/v2.0/authorize",
			"issuer":                        base + "/v2.0",
			"device_authorization_endpoint": base + "/oauth2/v2.0/devicecode",
			"end_session_endpoint":          base + "/oauth2/v2.0/logout",
			"jwks_uri":                      base + "/discovery/v2.0/keys",
			"tenant_region_scope":           "EU",
		})
	case strings.HasSuffix(p, "/oauth2/v2.0/token"):
		f.token(w, p, c.Form)
	case !c.Auth && strings.HasPrefix(p, "/subscriptions/"):
		w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer authorization_uri="https://login.windows.net/%s", error="invalid_token", error_description="The authentication failed because of missing 'Authorization' header."`, testTenant))
		writeJSON(w, 401, armError("AuthenticationFailed", "missing Authorization header"))
	case strings.HasPrefix(p, "/operations/"):
		f.operation(w, strings.TrimPrefix(p, "/operations/"))
	default:
		f.arm(w, r, c)
	}
}

func (f *fakeAzure) token(w http.ResponseWriter, p string, form url.Values) {
	tenant := strings.Split(strings.Trim(p, "/"), "/")[0]
	if tenant != testTenant || form.Get("client_id") != testClientID || form.Get("client_secret") != testSecret {
		writeJSON(w, 401, map[string]any{"error": "invalid_client", "error_description": "AADSTS7000215: Invalid client secret provided for app " + form.Get("client_id"), "error_codes": []int{7000215}})
		return
	}
	scope := strings.Fields(form.Get("scope") + " ")[0] // MSAL adds openid, offline_access, profile
	aud := strings.TrimSuffix(scope, "/.default")
	iss := "https://sts.windows.net/" + testTenant + "/"
	f.mu.Lock()
	deny := f.denyStorage
	f.mu.Unlock()
	if strings.Contains(scope, "storage.azure.com") && deny {
		iss = "https://sts.example.invalid/" + testTenant + "/" // Azurite refuses the issuer, as Azure refuses a principal without a data role
	}
	now := time.Now().Unix()
	claims, _ := json.Marshal(map[string]any{"aud": aud, "iss": iss, "nbf": now - 60, "iat": now - 60, "exp": now + 3600, "tid": testTenant, "appid": testClientID})
	enc := base64.RawURLEncoding
	tok := enc.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + enc.EncodeToString(claims) + "." + enc.EncodeToString([]byte("sig"))
	writeJSON(w, 200, map[string]any{"token_type": "Bearer", "expires_in": 3600, "ext_expires_in": 3600, "access_token": tok})
}

func armError(code, msg string) map[string]any {
	return map[string]any{"error": map[string]any{"code": code, "message": msg}}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// kindOf names a request for throttle and failOp: "PUT images",
// "PUT versions", "POST listKeys", "GET storageAccounts", …
func kindOf(method, p string) string {
	parts := strings.Split(strings.Trim(p, "/"), "/")
	if len(parts) < 2 {
		return method
	}
	last := parts[len(parts)-1]
	if last == "listKeys" {
		return method + " listKeys"
	}
	return method + " " + parts[len(parts)-2]
}

func (f *fakeAzure) arm(w http.ResponseWriter, r *http.Request, c call) {
	if !c.Auth {
		writeJSON(w, 401, armError("AuthenticationFailed", "no token"))
		return
	}
	kind := kindOf(r.Method, r.URL.Path)
	f.mu.Lock()
	if f.throttle[kind] > 0 {
		f.throttle[kind]--
		f.mu.Unlock()
		w.Header().Set("Retry-After", "1")
		writeJSON(w, 429, armError("TooManyRequests", "throttled"))
		return
	}
	fail := f.failOp[kind]
	f.mu.Unlock()
	p := r.URL.Path
	if !strings.HasPrefix(strings.ToLower(p), strings.ToLower(rgID())) {
		writeJSON(w, 404, armError("ResourceGroupNotFound", "resource group not found"))
		return
	}
	switch {
	case kind == "POST listKeys":
		writeJSON(w, 200, map[string]any{"keys": []map[string]any{
			{"keyName": "key1", "value": f.storageKey, "permissions": "FULL"},
		}})
	case r.Method == http.MethodGet:
		res := f.resource(p)
		if res == nil {
			writeJSON(w, 404, armError("NotFound", "The resource was not found."))
			return
		}
		writeJSON(w, 200, res)
	case r.Method == http.MethodPut:
		res := c.Body
		if res == nil {
			writeJSON(w, 400, armError("InvalidRequestContent", "no body"))
			return
		}
		props, _ := res["properties"].(map[string]any)
		if props == nil {
			props = map[string]any{}
			res["properties"] = props
		}
		props["provisioningState"] = "Creating"
		parts := strings.Split(p, "/")
		res["name"] = parts[len(parts)-1]
		f.addResource(p, res)
		w.Header().Set("Azure-AsyncOperation", f.startOp(p, fail, false))
		writeJSON(w, 201, res)
	case r.Method == http.MethodDelete:
		if f.resource(p) == nil {
			w.WriteHeader(204)
			return
		}
		w.Header().Set("Azure-AsyncOperation", f.startOp(p, "", true))
		w.WriteHeader(202)
	default:
		writeJSON(w, 405, armError("MethodNotAllowed", r.Method))
	}
}

func (f *fakeAzure) startOp(id, fail string, deleting bool) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.nextOp++
	name := fmt.Sprintf("op%d", f.nextOp)
	f.ops[name] = &operation{id: id, fail: fail, deleting: deleting}
	return f.URL + "/operations/" + name + "?api-version=2024-03-01"
}

func (f *fakeAzure) operation(w http.ResponseWriter, name string) {
	f.mu.Lock()
	op := f.ops[name]
	if op == nil {
		f.mu.Unlock()
		writeJSON(w, 404, armError("NotFound", "no such operation"))
		return
	}
	op.polls++
	if op.polls <= f.pollsPerOp {
		f.mu.Unlock()
		writeJSON(w, 200, map[string]any{"status": "InProgress"})
		return
	}
	key := strings.ToLower(op.id)
	res := f.resources[key]
	switch {
	case op.deleting:
		delete(f.resources, key)
	case op.fail != "" && res != nil:
		res["properties"].(map[string]any)["provisioningState"] = "Failed"
	case res != nil:
		res["properties"].(map[string]any)["provisioningState"] = "Succeeded"
	}
	f.mu.Unlock()
	if op.fail != "" && !op.deleting {
		writeJSON(w, 200, map[string]any{"status": "Failed", "error": map[string]any{"code": op.fail, "message": "the operation failed"}})
		return
	}
	writeJSON(w, 200, map[string]any{"status": "Succeeded"})
}
