package azure

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/arm"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/cloud"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"

	"github.com/cloudupload/cloudupload/internal/lazyre"
	"github.com/cloudupload/cloudupload/targets"
)

// Defaults of the target.
const (
	defaultWorkers   = 16              // parallel Put Page requests
	maxWorkers       = 64              // CLOUDUPLOAD_AZURE_WORKERS upper bound
	defaultPoll      = 5 * time.Second // polling long-running ARM operations
	cleanupTimeout   = 2 * time.Minute // removing what a failed job created
	tryTimeout       = 2 * time.Minute // one HTTP attempt
	publicAuthority  = "https://login.microsoftonline.com/"
	publicARM        = "https://management.azure.com"
	publicARMAud     = "https://management.core.windows.net/"
	publicBlob       = "https://{account}.blob.core.windows.net"
	storageAudience  = "https://storage.azure.com/"
	discoveryVersion = "2022-12-01" // api-version of the unauthenticated subscription call
)

// Target publishes disk images as Azure managed images and gallery image
// versions. The zero value is not usable; call New.
type Target struct {
	workers    int
	poll       time.Duration
	retryDelay time.Duration // first pause of the SDK's retries
	// transport replaces the HTTP client (tests trust their CA through it);
	// nil means Go's default, which trusts SSL_CERT_FILE on Linux.
	transport policy.Transporter
}

// New returns the azure target.
func New() targets.Target {
	return &Target{workers: defaultWorkers, poll: defaultPoll, retryDelay: 2 * time.Second}
}

// Name implements targets.Target.
func (t *Target) Name() string { return "azure" }

// Check implements targets.Target: it validates the target data and the
// job's architecture and decrypts the credentials, without any network
// call.
func (t *Target) Check(job targets.Job, raw []byte, getenv func(string) string) error {
	if getenv == nil {
		getenv = os.Getenv
	}
	if _, err := parseData(raw, job, getenv("CLOUDUPLOAD_PRIVKEY")); err != nil {
		return err
	}
	_, err := endpointsFrom(getenv)
	return err
}

// endpoints are where the cloud's services are.
type endpoints struct {
	authority string // AAD authority host
	arm       string // ARM base URL
	armAud    string // ARM token audience
	blob      string // blob service URL with {account}
	workers   int
}

// endpointsFrom reads the environment: AZURE_AUTHORITY_HOST (as azidentity
// reads it), CLOUDUPLOAD_AZURE_ARM_ENDPOINT, CLOUDUPLOAD_AZURE_ARM_AUDIENCE,
// CLOUDUPLOAD_AZURE_BLOB_ENDPOINT and CLOUDUPLOAD_AZURE_WORKERS.
func endpointsFrom(getenv func(string) string) (endpoints, error) {
	e := endpoints{authority: publicAuthority, arm: publicARM, armAud: publicARMAud, blob: publicBlob, workers: defaultWorkers}
	check := func(name, v string) (string, error) {
		u, err := url.Parse(v)
		if err != nil || u.Scheme != "https" || u.Host == "" {
			return "", fmt.Errorf("%s=%q is not an https URL", name, v)
		}
		return strings.TrimRight(v, "/"), nil
	}
	var err error
	if v := getenv("AZURE_AUTHORITY_HOST"); v != "" {
		if e.authority, err = check("AZURE_AUTHORITY_HOST", v); err != nil {
			return e, err
		}
		e.authority += "/"
	}
	if v := getenv("CLOUDUPLOAD_AZURE_ARM_ENDPOINT"); v != "" {
		if e.arm, err = check("CLOUDUPLOAD_AZURE_ARM_ENDPOINT", v); err != nil {
			return e, err
		}
	}
	if v := getenv("CLOUDUPLOAD_AZURE_ARM_AUDIENCE"); v != "" {
		if e.armAud, err = check("CLOUDUPLOAD_AZURE_ARM_AUDIENCE", v); err != nil {
			return e, err
		}
		e.armAud += "/"
	}
	if v := getenv("CLOUDUPLOAD_AZURE_BLOB_ENDPOINT"); v != "" {
		if !strings.Contains(v, "{account}") {
			return e, fmt.Errorf("CLOUDUPLOAD_AZURE_BLOB_ENDPOINT=%q does not hold {account}", v)
		}
		if e.blob, err = check("CLOUDUPLOAD_AZURE_BLOB_ENDPOINT", strings.ReplaceAll(v, "{account}", "account")); err != nil {
			return e, err
		}
		e.blob = strings.TrimRight(v, "/")
	}
	if v := getenv("CLOUDUPLOAD_AZURE_WORKERS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxWorkers {
			return e, fmt.Errorf("CLOUDUPLOAD_AZURE_WORKERS=%q is not a number from 1 to %d", v, maxWorkers)
		}
		e.workers = n
	}
	return e, nil
}

// publicCloud reports whether the authority is Azure's public one, where
// MSAL's instance discovery works; elsewhere (Azure Stack, tests) it is
// disabled.
func (e endpoints) publicCloud() bool {
	return strings.TrimRight(e.authority, "/") == strings.TrimRight(publicAuthority, "/")
}

// clientOptions are the SDK options every client shares: the cloud's
// endpoints, the transport and retries of throttling (429 with
// Retry-After), timeouts and server errors.
func (t *Target) clientOptions(e endpoints) azcore.ClientOptions {
	o := azcore.ClientOptions{
		Cloud: cloud.Configuration{
			ActiveDirectoryAuthorityHost: e.authority,
			Services: map[cloud.ServiceName]cloud.ServiceConfiguration{
				cloud.ResourceManager: {Endpoint: e.arm, Audience: e.armAud},
			},
		},
		Retry: policy.RetryOptions{
			MaxRetries:    8,
			TryTimeout:    tryTimeout,
			RetryDelay:    t.retryDelay,
			MaxRetryDelay: 60 * time.Second,
		},
		Telemetry: policy.TelemetryOptions{ApplicationID: "cloudupload"},
	}
	if t.transport != nil {
		o.Transport = t.transport
	}
	return o
}

// blobTransport is the HTTP client of the blob service: HTTP/1.1 (the
// protocol of Azure Storage), with an idle connection kept for each of the
// workers. The SDK's default client keeps at most 10 idle connections per
// host: with more workers, every request over the tenth closed its
// connection when it finished and the next opened a new one with a new TLS
// handshake. It is a clone of the test's transport when one is set.
func (t *Target) blobTransport(workers int) policy.Transporter {
	var tr *http.Transport
	switch c := t.transport.(type) {
	case nil:
		tr = http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	case *http.Client:
		base, ok := c.Transport.(*http.Transport)
		if !ok {
			return t.transport
		}
		tr = base.Clone()
	default:
		return t.transport
	}
	tr.ForceAttemptHTTP2 = false
	tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{} // no HTTP/2
	if tr.TLSClientConfig != nil {
		tr.TLSClientConfig.NextProtos = nil
	}
	tr.MaxIdleConnsPerHost = workers + 1 // the footer and metadata calls too
	tr.MaxIdleConns = max(tr.MaxIdleConns, tr.MaxIdleConnsPerHost)
	return &http.Client{Transport: tr}
}

func (t *Target) armOptions(e endpoints) *arm.ClientOptions {
	return &arm.ClientOptions{ClientOptions: t.clientOptions(e)}
}

// credential is the service principal's.
func (t *Target) credential(e endpoints, tenant string, d *data) (azcore.TokenCredential, error) {
	cred, err := azidentity.NewClientSecretCredential(tenant, d.clientID, d.secret, &azidentity.ClientSecretCredentialOptions{
		ClientOptions:            t.clientOptions(e),
		DisableInstanceDiscovery: !e.publicCloud(),
	})
	if err != nil {
		// The SDK's message names neither secret; keep only the kind.
		return nil, fmt.Errorf("service principal credential for tenant %s: %w", tenant, err)
	}
	return cred, nil
}

var authURIRE = lazyre.New(`authorization_uri="([^"]+)"`)

// discoverTenant finds the subscription's tenant the way the Azure CLI
// does: an unauthenticated ARM call is refused with a challenge whose
// authorization_uri ends with the tenant id.
func (t *Target) discoverTenant(ctx context.Context, e endpoints, subscription string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	u := fmt.Sprintf("%s/subscriptions/%s?api-version=%s", e.arm, url.PathEscape(subscription), discoveryVersion)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return "", err
	}
	client := http.DefaultClient
	if hc, ok := t.transport.(*http.Client); ok {
		client = hc
	}
	resp, err := client.Do(req)
	if err != nil {
		return "", fmt.Errorf("find the tenant of subscription %s: %w", subscription, err)
	}
	resp.Body.Close()
	m := authURIRE.FindStringSubmatch(resp.Header.Get("WWW-Authenticate"))
	if resp.StatusCode != http.StatusUnauthorized || m == nil {
		return "", fmt.Errorf("find the tenant of subscription %s: ARM answered %s without a challenge naming it; set tenant in the target data", subscription, resp.Status)
	}
	au, err := url.Parse(m[1])
	tenant := ""
	if err == nil {
		tenant = strings.Trim(au.Path, "/")
	}
	if !tenantRE.MatchString(tenant) {
		return "", fmt.Errorf("find the tenant of subscription %s: the challenge's authorization_uri %q names no tenant; set tenant in the target data", subscription, m[1])
	}
	return tenant, nil
}

// jobToken identifies one job's publication of one image. The blob's
// metadata and the tags of the image and gallery version carry it, so a
// rerun of the same job recognises its own work.
func jobToken(job targets.Job, d *data, img targets.Image) string {
	h := sha256.New()
	fmt.Fprintf(h, "%q %q %q %q %q %q %q %q %q %q %q %q\n", job.ID, job.User, job.Project, job.Repository,
		job.Arch, job.Package, job.Filename, d.Subscription, d.StorageAccount, d.Container, d.ResourceGroup, d.ImageName)
	if img != nil {
		if fi, err := os.Stat(img.Path()); err == nil {
			fmt.Fprintf(h, "%d %d\n", fi.Size(), fi.ModTime().UnixNano())
		}
	}
	return hex.EncodeToString(h.Sum(nil))[:32]
}

// httpStatus is the HTTP status of an SDK error, 0 when there is none.
func httpStatus(err error) int {
	var re *azcore.ResponseError
	if errors.As(err, &re) {
		return re.StatusCode
	}
	return 0
}

// errorCode is the service's error code of an SDK error.
func errorCode(err error) string {
	var re *azcore.ResponseError
	if errors.As(err, &re) {
		return re.ErrorCode
	}
	return ""
}

// tidy shortens the SDK's multi-line error text to one line for the job's
// details ("PUT https://…: HTTP 409 Conflict, code X") while keeping the
// chain for errors.Is/As.
func tidy(err error) error {
	if err == nil {
		return nil
	}
	var te *targets.ShortError
	if errors.As(err, &te) {
		return err // already short
	}
	if why := authFailure(err); why != "" {
		return &targets.ShortError{Msg: "cannot sign in as the service principal (check application_id, application_key and tenant): " + why, Err: err}
	}
	var re *azcore.ResponseError
	if !errors.As(err, &re) {
		return err
	}
	msg := fmt.Sprintf("HTTP %d", re.StatusCode)
	if re.ErrorCode != "" {
		msg += " " + re.ErrorCode
	}
	if re.StatusCode < 300 { // a long-running operation that ended in failure
		msg = "the operation failed: " + re.ErrorCode
	} else if re.RawResponse != nil && re.RawResponse.Request != nil {
		r := re.RawResponse.Request
		msg = r.Method + " " + r.URL.Path + ": " + msg
	}
	text := err.Error()
	if i := strings.Index(text, re.Error()); i > 0 {
		msg = text[:i] + msg
	}
	return &targets.ShortError{Msg: msg, Err: err}
}

// authFailure says why Azure AD refused the principal ("HTTP 401
// invalid_client"), "" when err is not such a refusal. Only AAD's error
// code is kept: its description may quote request details.
func authFailure(err error) string {
	var ae *azidentity.AuthenticationFailedError
	if !errors.As(err, &ae) {
		return ""
	}
	why := "no answer from Azure AD"
	if ae.RawResponse != nil {
		why = fmt.Sprintf("HTTP %d", ae.RawResponse.StatusCode)
		var body struct {
			Error string `json:"error"`
		}
		if b, rerr := io.ReadAll(io.LimitReader(ae.RawResponse.Body, 64<<10)); rerr == nil && json.Unmarshal(b, &body) == nil && body.Error != "" {
			why += " " + body.Error
		}
	}
	return why
}
