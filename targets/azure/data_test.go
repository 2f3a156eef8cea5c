package azure

import (
	"crypto/rand"
	"crypto/rsa"
	"strings"
	"testing"

	"github.com/cloudupload/cloudupload"
	"github.com/cloudupload/cloudupload/targets"
)

var x86Job = targets.Job{ID: "1", Arch: "x86_64", Filename: "a.x86_64.raw.xz"}

func testData(t *testing.T, extra string) []byte {
	pub := &testKey().PublicKey
	id, _ := jsonString(encryptOBS(t, pub, testClientID))
	key, _ := jsonString(encryptOBS(t, pub, testSecret))
	s := `{"application_id":` + id + `,"application_key":` + key + `,"user_id":7,"image_name":"my-image","subscription":"` + testSubscription +
		`","container":"images","storage_account":"myaccount","resource_group":"my-group"` + extra + `}`
	return []byte(s)
}

func jsonString(s string) (string, error) {
	return `"` + strings.ReplaceAll(s, "\n", `\n`) + `"`, nil
}

// TestParseOBSData decodes what OBS's frontend sends, with the
// credentials encrypted and base64-encoded with newlines as Ruby does.
func TestParseOBSData(t *testing.T) {
	priv := writePrivKey(t)
	d, err := parseData(testData(t, ""), x86Job, priv)
	if err != nil {
		t.Fatal(err)
	}
	if d.clientID != testClientID || d.secret != testSecret {
		t.Errorf("credentials not decrypted")
	}
	if d.ImageName != "my-image" || d.Architecture != "x64" || d.OSType != "Linux" || !d.KeepBlob || !d.ManagedImage || d.blobName() != "my-image.vhd" {
		t.Errorf("data %+v", d)
	}
	if strings.Contains(d.String(), testSecret) || strings.Contains(d.String(), testClientID) {
		t.Errorf("String shows a credential")
	}
	d, err = parseData(testData(t, `,"architecture":"arm64","managed_image":false,"hyper_v_generation":"v2","gallery":{"name":"g1","image_definition":"sles-16","version":"1.0.0","target_regions":["westeurope","northeurope","westeurope"]}`),
		targets.Job{Arch: "aarch64"}, priv)
	if err != nil {
		t.Fatal(err)
	}
	if d.Architecture != "Arm64" || d.HyperVGeneration != "V2" || strings.Join(d.Gallery.TargetRegions, ",") != "northeurope,westeurope" {
		t.Errorf("data %+v, gallery %+v", d, d.Gallery)
	}
}

// TestParseRejects checks that each bad value is refused naming its field,
// before anything else.
func TestParseRejects(t *testing.T) {
	priv := writePrivKey(t)
	for _, c := range []struct {
		extra, field string
		job          targets.Job
	}{
		{`,"image_name":"-x"`, "image_name", x86Job},
		{`,"image_name":"my-image-"`, "image_name", x86Job},
		{`,"image_name":"` + strings.Repeat("a", 64) + `"`, "image_name", x86Job},
		{`,"storage_account":"ab"`, "storage_account", x86Job},
		{`,"resource_group":"a/b"`, "resource_group", x86Job},
		{`,"subscription":"../x"`, "subscription", x86Job},
		{`,"tenant":"a b"`, "tenant", x86Job},
		{`,"location":"West Europe"`, "location", x86Job},
		{`,"architecture":"ppc"`, "architecture", x86Job},
		{`,"architecture":"Arm64"`, "architecture", x86Job},
		{`,"os_type":"BSD"`, "os_type", x86Job},
		{`,"tags":{"cloudupload:job":"x"}`, "tags", x86Job},
		{`,"tags":{"a":1}`, "tags", x86Job},
		{`,"keep_blob":"maybe"`, "keep_blob", x86Job},
		{`,"managed_image":false`, "managed_image", x86Job},
		{`,"gallery":{"name":"g","image_definition":"d","version":"1.0.0","extra":1}`, "extra", x86Job},
		{`,"gallery":{"name":"g","image_definition":"d","version":"1.0.0","target_regions":["West"]}`, "gallery.target_regions", x86Job},
		{`,"gallery":{"image_definition":"d","version":"1.0.0"}`, "gallery.name", x86Job},
		{`,"user_id":[1]`, "user_id", x86Job},
		{``, "arch", targets.Job{Arch: "s390x"}},
		{``, "Arm64", targets.Job{Arch: "aarch64"}}, // managed images are x64 only
	} {
		_, err := parseData(testData(t, c.extra), c.job, priv)
		if cloudupload.ErrorCode(err) != cloudupload.EINVALID || !strings.Contains(cloudupload.ErrorMessage(err), c.field) {
			t.Errorf("%s: %v, want EINVALID naming %s", c.extra, err, c.field)
		}
	}
}

// TestDecryptFailures: values that do not decrypt, or decrypt to something
// that is not a client id or secret, all get the same answer; a server
// without a key is not the user's fault.
func TestDecryptFailures(t *testing.T) {
	priv := writePrivKey(t)
	pub := &testKey().PublicKey
	for _, c := range []struct{ name, id string }{
		{"not base64", `"%%%"`},
		{"short", `"AAAA"`},
		{"not a GUID", mustJSON(encryptOBS(t, pub, "not-a-guid"))},
		{"other key", mustJSON(encryptOBS(t, &otherKey(t).PublicKey, testClientID))},
	} {
		_, err := parseData(withID(t, c.id), x86Job, priv)
		if cloudupload.ErrorCode(err) != cloudupload.EINVALID || !strings.Contains(cloudupload.ErrorMessage(err), "application_id") {
			t.Errorf("%s: %v", c.name, err)
		}
	}
	_, err := parseData(testData(t, ""), x86Job, "")
	if err == nil || cloudupload.ErrorCode(err) == cloudupload.EINVALID || !strings.Contains(err.Error(), "CLOUDUPLOAD_PRIVKEY") {
		t.Errorf("no key: %v", err)
	}
}

func mustJSON(s string) string { j, _ := jsonString(s); return j }

// withID is valid data with application_id replaced by the JSON value id.
func withID(t *testing.T, id string) []byte {
	key := mustJSON(encryptOBS(t, &testKey().PublicKey, testSecret))
	return []byte(`{"application_id":` + id + `,"application_key":` + key + `,"image_name":"my-image","subscription":"` + testSubscription +
		`","container":"images","storage_account":"myaccount","resource_group":"my-group"}`)
}

func otherKey(t *testing.T) *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestEndpoints reads the environment and refuses what is not https.
func TestEndpoints(t *testing.T) {
	env := map[string]string{}
	getenv := func(k string) string { return env[k] }
	e, err := endpointsFrom(getenv)
	if err != nil || !e.publicCloud() || e.arm != publicARM || e.blob != publicBlob || e.workers != defaultWorkers {
		t.Fatalf("defaults: %+v, %v", e, err)
	}
	env["AZURE_AUTHORITY_HOST"] = "https://login.microsoftonline.us"
	env["CLOUDUPLOAD_AZURE_ARM_ENDPOINT"] = "https://management.usgovcloudapi.net/"
	env["CLOUDUPLOAD_AZURE_ARM_AUDIENCE"] = "https://management.core.usgovcloudapi.net"
	env["CLOUDUPLOAD_AZURE_BLOB_ENDPOINT"] = "https://{account}.blob.core.usgovcloudapi.net"
	e, err = endpointsFrom(getenv)
	if err != nil || e.publicCloud() || e.arm != "https://management.usgovcloudapi.net" || e.armAud != "https://management.core.usgovcloudapi.net/" {
		t.Fatalf("sovereign cloud: %+v, %v", e, err)
	}
	for k, v := range map[string]string{
		"AZURE_AUTHORITY_HOST":            "http://login.example",
		"CLOUDUPLOAD_AZURE_BLOB_ENDPOINT": "https://blob.example",
		"CLOUDUPLOAD_AZURE_WORKERS":       "65",
	} {
		env := map[string]string{k: v}
		if _, err := endpointsFrom(func(k string) string { return env[k] }); err == nil || !strings.Contains(err.Error(), k) {
			t.Errorf("%s=%s: %v", k, v, err)
		}
	}
}
