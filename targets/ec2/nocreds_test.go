package ec2

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cloudupload/cloudupload/targets/awsauth"
)

// TestNoServerCredentials: on a server with no AWS identity of its own, an
// ec2 job fails saying so, not blaming the user's role, and no SDK output
// reaches the log but through the job log's own format.
func TestNoServerCredentials(t *testing.T) {
	for _, k := range []string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
		"AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"} {
		t.Setenv(k, "")
	}
	dir := t.TempDir()
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(dir, "config"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(dir, "credentials"))
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")      // not an EC2 instance
	t.Setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9") // nothing may be asked
	im := writeImage(t, "appliance.x86_64.raw", testDisk(2, func(int) bool { return true }))
	_, log, err := upload(t, context.Background(), testTarget(), testJob("16", "appliance.x86_64.raw"), jsonData(t, map[string]any{"ami_name": "nocreds"}), im)
	if err == nil || err.Error() != awsauth.NoCredentials {
		t.Errorf("error %v, want %q", err, awsauth.NoCredentials)
	}
	if strings.Contains(log, "SDK 20") {
		t.Errorf("SDK output in its own format in the log:\n%s", log)
	}
}
