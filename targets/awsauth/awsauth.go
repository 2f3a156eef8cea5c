// Package awsauth gives AWS targets their configuration: the service's own
// identity from the SDK's default chain (environment, shared files, instance
// role; AWS_ENDPOINT_URL and AWS_ENDPOINT_URL_<SERVICE> point clients at a
// local server), then the user's role assumed with its external id, cached
// and refreshed before expiry so multi-hour uploads never fail on it.
// It also validates the fields every AWS target shares.
package awsauth

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials/stscreds"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/aws/smithy-go/logging"

	"github.com/cloudupload/cloudupload"
	"github.com/cloudupload/cloudupload/internal/lazyre"
)

// Role is whom to act as in the user's account.
type Role struct {
	ARN        string // arn:aws:iam::123456789012:role/obs
	ExternalID string // handed to the user by the frontend; not a secret
	Session    string // RoleSessionName, e.g. "cloudupload-6"
}

// Options tune the HTTP client shared by every service client.
type Options struct {
	// MaxConns is the number of parallel requests the caller will make; the
	// transport keeps that many idle connections per host (default 10).
	MaxConns int
	// Logf receives the SDK's own warnings (e.g. "falling back to IMDSv1"),
	// so that they reach the job log in its format; nil drops them (the
	// SDK's default would print them to stderr in a format of its own).
	Logf func(format string, args ...any)
}

// NoCredentials is the error message of Config when the service has no AWS
// identity of its own: the operator's to fix, not the user's.
const NoCredentials = "the server has no AWS credentials; its operator must give it an AWS identity " +
	"(AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, a shared credentials file or an instance role)"

// Config loads the service's own configuration for region and assumes role.
// It fails with NoCredentials (EINTERNAL) when the service's own
// credentials cannot be found.
// Credentials are fetched lazily on the first request and refreshed five
// minutes before they expire.
func Config(ctx context.Context, region string, role Role, opt Options) (aws.Config, error) {
	conns := opt.MaxConns
	if conns < 10 {
		conns = 10
	}
	client := awshttp.NewBuildableClient().WithTransportOptions(func(t *http.Transport) {
		t.MaxIdleConns = 2 * conns
		t.MaxIdleConnsPerHost = conns
	})
	var logger logging.Logger = logging.Nop{}
	if opt.Logf != nil {
		logger = logging.LoggerFunc(func(c logging.Classification, format string, v ...any) {
			opt.Logf("AWS SDK %s: %s", strings.ToLower(string(c)), fmt.Sprintf(format, v...))
		})
	}
	base, err := config.LoadDefaultConfig(ctx, config.WithRegion(region), config.WithHTTPClient(client), config.WithLogger(logger))
	if err != nil {
		return aws.Config{}, cloudupload.Errorf(cloudupload.EINTERNAL, "load AWS configuration: %v", err)
	}
	// The service's own identity first: without it nothing can be signed,
	// and the error must say so rather than blame the user's role.
	if _, err := base.Credentials.Retrieve(ctx); err != nil {
		if opt.Logf != nil {
			opt.Logf("no AWS credentials: %v", err)
		}
		return aws.Config{}, cloudupload.Errorf(cloudupload.EINTERNAL, "%s", NoCredentials)
	}
	if role.ARN == "" {
		return base, nil
	}
	provider := stscreds.NewAssumeRoleProvider(sts.NewFromConfig(base), role.ARN, func(o *stscreds.AssumeRoleOptions) {
		if role.ExternalID != "" {
			o.ExternalID = aws.String(role.ExternalID)
		}
		o.RoleSessionName = SessionName(role.Session)
		o.Duration = time.Hour
	})
	cfg := base.Copy()
	cfg.Credentials = aws.NewCredentialsCache(provider, func(o *aws.CredentialsCacheOptions) {
		o.ExpiryWindow = 5 * time.Minute
	})
	return cfg, nil
}

var sessionChars = lazyre.New(`[^\w+=,.@-]`)

// SessionName makes s a valid RoleSessionName (2–64 of [\w+=,.@-]).
func SessionName(s string) string {
	s = sessionChars.ReplaceAllString(s, "-")
	if len(s) > 64 {
		s = s[:64]
	}
	for len(s) < 2 {
		s += "-"
	}
	return s
}

var (
	arnRE    = lazyre.New(`^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}$`)
	regionRE = lazyre.New(`^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-\d{1,2}$`)
	extIDRE  = lazyre.New(`^[\w+=,.@:/-]+$`)
)

// CheckARN validates an IAM role ARN; field names it in the error.
func CheckARN(field, s string) error {
	if s == "" {
		return cloudupload.Errorf(cloudupload.EINVALID, "%s is missing", field)
	}
	if !arnRE.MatchString(s) {
		return cloudupload.Errorf(cloudupload.EINVALID, "%s %q is not an IAM role ARN (arn:aws:iam::<12-digit account>:role/<name>)", field, s)
	}
	return nil
}

// CheckRegion validates an AWS region name such as eu-central-1.
func CheckRegion(field, s string) error {
	if s == "" {
		return cloudupload.Errorf(cloudupload.EINVALID, "%s is missing", field)
	}
	if !regionRE.MatchString(s) {
		return cloudupload.Errorf(cloudupload.EINVALID, "%s %q is not an AWS region (such as us-east-1)", field, s)
	}
	return nil
}

// CheckExternalID validates an STS external id (2–1224 of [\w+=,.@:/-]),
// allowing it to be absent.
func CheckExternalID(field, s string) error {
	if s == "" {
		return nil
	}
	if len(s) < 2 || len(s) > 1224 || !extIDRE.MatchString(s) {
		return cloudupload.Errorf(cloudupload.EINVALID, "%s is not a valid external id (2 to 1224 of letters, digits and +=,.@:/-)", field)
	}
	return nil
}
