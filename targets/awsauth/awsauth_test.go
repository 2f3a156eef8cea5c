package awsauth

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/sts"

	"github.com/cloudupload/cloudupload"
	"github.com/cloudupload/cloudupload/targets/awstest"
)

func TestChecks(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string // "" = valid
	}{
		{CheckARN("arn", "arn:aws:iam::123456789012:role/obs"), ""},
		{CheckARN("arn", "arn:aws-us-gov:iam::123456789012:role/path/obs"), ""},
		{CheckARN("arn", ""), "arn is missing"},
		{CheckARN("arn", "arn:aws:iam::1234:role/obs"), "arn \"arn:aws:iam::1234:role/obs\" is not an IAM role ARN"},
		{CheckRegion("region", "eu-central-1"), ""},
		{CheckRegion("region", "us-gov-west-1"), ""},
		{CheckRegion("region", "mars-1"), "region \"mars-1\" is not an AWS region"},
		{CheckRegion("region", ""), "region is missing"},
		{CheckExternalID("external_id", ""), ""},
		{CheckExternalID("external_id", "a1b2-c3"), ""},
		{CheckExternalID("external_id", "bad id!"), "external_id is not a valid external id"},
	} {
		if tc.want == "" {
			if tc.err != nil {
				t.Errorf("unexpected error %v", tc.err)
			}
			continue
		}
		if tc.err == nil || !strings.HasPrefix(cloudupload.ErrorMessage(tc.err), tc.want) || cloudupload.ErrorCode(tc.err) != cloudupload.EINVALID {
			t.Errorf("got %v, want prefix %q", tc.err, tc.want)
		}
	}
}

func TestSessionName(t *testing.T) {
	for in, want := range map[string]string{"cloudupload-6": "cloudupload-6", "a": "a-", "job 7/x": "job-7-x", strings.Repeat("x", 70): strings.Repeat("x", 64)} {
		if got := SessionName(in); got != want {
			t.Errorf("SessionName(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestAssumeRoleAgainstMoto checks that Config assumes the role through the
// STS endpoint from the environment, with the external id and session name.
func TestAssumeRoleAgainstMoto(t *testing.T) {
	m := awstest.Start(t)
	var calls atomic.Int32
	var sawExternalID atomic.Bool
	// A recording proxy in front of moto: STS requests are form-encoded.
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.ParseForm()
		if r.Form.Get("Action") == "AssumeRole" {
			calls.Add(1)
			sawExternalID.Store(r.Form.Get("ExternalId") == "ext-123" && r.Form.Get("RoleSessionName") == "cloudupload-6")
		}
		req, _ := http.NewRequest(r.Method, m.URL+r.URL.RequestURI(), strings.NewReader(r.Form.Encode()))
		req.Header = r.Header.Clone()
		req.ContentLength = int64(len(r.Form.Encode()))
		resp, err := http.DefaultTransport.RoundTrip(req)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		for k, v := range resp.Header {
			w.Header()[k] = v
		}
		w.WriteHeader(resp.StatusCode)
		buf := make([]byte, 32<<10)
		for {
			n, err := resp.Body.Read(buf)
			w.Write(buf[:n])
			if err != nil {
				break
			}
		}
	}))
	defer proxy.Close()
	m.Setenv(t)
	t.Setenv("AWS_ENDPOINT_URL", proxy.URL)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg, err := Config(ctx, "us-east-1", Role{ARN: "arn:aws:iam::123456789012:role/obs", ExternalID: "ext-123", Session: "cloudupload-6"}, Options{MaxConns: 32})
	if err != nil {
		t.Fatal(err)
	}
	creds, err := cfg.Credentials.Retrieve(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if creds.AccessKeyID == awstest.AccessKey || creds.SessionToken == "" {
		t.Fatalf("credentials were not assumed: %q", creds.AccessKeyID)
	}
	// The assumed identity is the role's.
	id, err := sts.NewFromConfig(cfg).GetCallerIdentity(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(*id.Arn, "assumed-role/obs/cloudupload-6") {
		t.Errorf("caller identity %s", *id.Arn)
	}
	if calls.Load() != 1 || !sawExternalID.Load() {
		t.Errorf("AssumeRole calls %d, external id and session name sent: %v", calls.Load(), sawExternalID.Load())
	}
}
