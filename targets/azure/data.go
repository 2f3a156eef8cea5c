package azure

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"unicode/utf8"

	"github.com/cloudupload/cloudupload"
	"github.com/cloudupload/cloudupload/internal/lazyre"
	"github.com/cloudupload/cloudupload/targets"
)

// Limits of the target data.
const (
	maxDataBytes     = 64 << 10
	maxUserTags      = 40 // Azure allows 50 per resource; the uploader adds its own
	maxTargetRegions = 30
)

// Metadata keys and tag names the uploader sets on what it creates. Blob
// metadata names must be C# identifiers, hence the underscores.
const (
	metaJob   = "cloudupload_job"
	metaToken = "cloudupload_token"
	metaState = "cloudupload_state" // "uploading" until every page is written, then "complete"
	tagJob    = "cloudupload:job"
	tagToken  = "cloudupload:token"
	tagImage  = "cloudupload:image"
)

// data is the azure target data after validation. The decrypted
// credentials are in clientID and secret; nothing prints them.
type data struct {
	ImageName        string
	Subscription     string
	Container        string
	StorageAccount   string
	ResourceGroup    string
	Tenant           string // "" = found from the subscription
	Location         string // "" = the storage account's
	HyperVGeneration string // "", V1, V2 ("" = from the image)
	Architecture     string // x64, Arm64
	OSType           string // Linux, Windows
	Tags             map[string]string
	Gallery          *gallery
	KeepBlob         bool // default true
	ManagedImage     bool // default true

	clientID, secret string
}

// gallery is an Azure Compute Gallery image version to publish.
type gallery struct {
	Name            string   `json:"name"`
	ImageDefinition string   `json:"image_definition"`
	Version         string   `json:"version"`
	TargetRegions   []string `json:"target_regions"`
}

// wire is the JSON as sent; Go's decoder refuses unknown fields.
type wire struct {
	ApplicationID    *string           `json:"application_id"`
	ApplicationKey   *string           `json:"application_key"`
	UserID           any               `json:"user_id"`
	ImageName        string            `json:"image_name"`
	Subscription     string            `json:"subscription"`
	Container        string            `json:"container"`
	StorageAccount   string            `json:"storage_account"`
	ResourceGroup    string            `json:"resource_group"`
	Tenant           string            `json:"tenant"`
	Location         string            `json:"location"`
	HyperVGeneration string            `json:"hyper_v_generation"`
	Architecture     string            `json:"architecture"`
	OSType           string            `json:"os_type"`
	Tags             map[string]string `json:"tags"`
	Gallery          *gallery          `json:"gallery"`
	KeepBlob         *bool             `json:"keep_blob"`
	ManagedImage     *bool             `json:"managed_image"`
}

// fields lists every key the target data may hold, for the unknown-field
// error.
var fields = []string{
	"application_id", "application_key", "user_id", "image_name", "subscription", "container",
	"storage_account", "resource_group", "tenant", "location", "hyper_v_generation", "architecture",
	"os_type", "tags", "gallery", "keep_blob", "managed_image",
}

var (
	// The OBS frontend's rules (Cloud::Azure::Configuration and the upload
	// form), ASCII only.
	imageNameRE      = lazyre.New(`^[A-Za-z0-9]([\w.-]*\w)?$`)
	containerRE      = lazyre.New(`^[-a-z0-9]{3,63}$`)
	storageAccountRE = lazyre.New(`^[a-z0-9]{3,24}$`)
	resourceGroupRE  = lazyre.New(`^[-\w.]*[-\w]$`)
	// Stricter than OBS (at least 3 characters) because it becomes part of
	// ARM URLs: a subscription id is a GUID.
	subscriptionRE = lazyre.New(`^[A-Za-z0-9-]{3,64}$`)
	tenantRE       = lazyre.New(`^[A-Za-z0-9]([A-Za-z0-9.-]{0,252}[A-Za-z0-9])?$`)
	locationRE     = lazyre.New(`^[a-z0-9]{2,40}$`)
	galleryRE      = lazyre.New(`^[A-Za-z0-9]([\w.]{0,78}[A-Za-z0-9])?$`)
	definitionRE   = lazyre.New(`^[A-Za-z0-9]([-\w.]{0,78}[A-Za-z0-9])?$`)
	versionRE      = lazyre.New(`^(0|[1-9]\d{0,8})\.(0|[1-9]\d{0,8})\.(0|[1-9]\d{0,8})$`)
)

func invalid(format string, args ...any) error {
	return cloudupload.Errorf(cloudupload.EINVALID, format, args...)
}

// parseData decodes and validates azure target data for job and decrypts
// its credentials with the private key privkey names. Every error about the
// data is a *cloudupload.Error with code EINVALID naming the field. It makes
// no network call.
func parseData(raw []byte, job targets.Job, privkey string) (*data, error) {
	if len(raw) > maxDataBytes {
		return nil, invalid("target data is larger than %d bytes", maxDataBytes)
	}
	var w wire
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&w); err != nil {
		return nil, decodeError(err)
	}
	if dec.More() {
		return nil, invalid("target data holds more than one JSON value")
	}
	d := &data{
		ImageName: w.ImageName, Subscription: w.Subscription, Container: w.Container,
		StorageAccount: w.StorageAccount, ResourceGroup: w.ResourceGroup, Tenant: w.Tenant,
		Location: w.Location, HyperVGeneration: w.HyperVGeneration, Architecture: w.Architecture,
		OSType: w.OSType, Tags: w.Tags, Gallery: w.Gallery, KeepBlob: true, ManagedImage: true,
	}
	if w.KeepBlob != nil {
		d.KeepBlob = *w.KeepBlob
	}
	if w.ManagedImage != nil {
		d.ManagedImage = *w.ManagedImage
	}
	switch w.UserID.(type) {
	case nil, string, float64:
	default:
		return nil, invalid("user_id must be a number or a string")
	}
	if err := d.check(job); err != nil {
		return nil, err
	}
	// The credentials last, once everything that can be said without the
	// key has been said.
	var err error
	if d.clientID, err = decryptField("application_id", w.ApplicationID, privkey, checkClientID); err != nil {
		return nil, err
	}
	if d.secret, err = decryptField("application_key", w.ApplicationKey, privkey, checkSecret); err != nil {
		return nil, err
	}
	return d, nil
}

// decodeError turns the JSON decoder's complaint into one naming the field.
func decodeError(err error) error {
	var te *json.UnmarshalTypeError
	var se *json.SyntaxError
	switch {
	case errors.As(err, &te) && te.Field != "":
		return invalid("%s must be %s", te.Field, kind(te.Type.Kind().String()))
	case errors.As(err, &se), errors.Is(err, errors.ErrUnsupported):
		return invalid("target data is not valid JSON")
	}
	if msg := err.Error(); strings.HasPrefix(msg, "json: unknown field ") {
		return invalid("unknown field %s in azure target data (known: %s)",
			strings.TrimPrefix(msg, "json: unknown field "), strings.Join(fields, ", "))
	}
	return invalid("target data is not a JSON object")
}

func kind(k string) string {
	switch k {
	case "string":
		return "a string"
	case "bool":
		return "true or false"
	case "map":
		return "an object of string values"
	case "slice":
		return "a list of strings"
	case "struct", "ptr":
		return "an object"
	}
	return "of another type"
}

func (d *data) check(job targets.Job) error {
	if err := checkImageName(d.ImageName); err != nil {
		return err
	}
	for _, f := range []struct {
		name, value, rule string
		re                *lazyre.Regexp
		min, max          int
	}{
		{"subscription", d.Subscription, "letters, digits and '-' (a subscription id)", subscriptionRE, 3, 64},
		{"container", d.Container, "a-z, 0-9 and '-'", containerRE, 3, 63},
		{"storage_account", d.StorageAccount, "a-z and 0-9", storageAccountRE, 3, 24},
		{"resource_group", d.ResourceGroup, "letters, digits, '-', '_' and '.', not ending with '.'", resourceGroupRE, 1, 90},
	} {
		switch {
		case f.value == "":
			return invalid("%s is missing", f.name)
		case len(f.value) < f.min || len(f.value) > f.max:
			return invalid("%s %q must be %d to %d characters", f.name, f.value, f.min, f.max)
		case !f.re.MatchString(f.value):
			return invalid("%s %q may only hold %s", f.name, f.value, f.rule)
		}
	}
	if d.Tenant != "" && !tenantRE.MatchString(d.Tenant) {
		return invalid("tenant %q is not a tenant id or domain", d.Tenant)
	}
	if d.Location != "" && !locationRE.MatchString(d.Location) {
		return invalid("location %q is not an Azure region name (such as westeurope)", d.Location)
	}
	switch strings.ToUpper(d.HyperVGeneration) {
	case "":
	case "V1", "V2":
		d.HyperVGeneration = strings.ToUpper(d.HyperVGeneration)
	default:
		return invalid("hyper_v_generation %q is not V1 or V2", d.HyperVGeneration)
	}
	jobArch, err := archOf(job)
	if err != nil {
		return err
	}
	switch strings.ToLower(d.Architecture) {
	case "":
		d.Architecture = jobArch
	case "x64":
		d.Architecture = "x64"
	case "arm64":
		d.Architecture = "Arm64"
	default:
		return invalid("architecture %q is not x64 or Arm64", d.Architecture)
	}
	if d.Architecture != jobArch {
		return invalid("architecture %s does not match the job's arch %s", d.Architecture, job.Arch)
	}
	switch strings.ToLower(d.OSType) {
	case "", "linux":
		d.OSType = "Linux"
	case "windows":
		d.OSType = "Windows"
	default:
		return invalid("os_type %q is not Linux or Windows", d.OSType)
	}
	if d.Architecture == "Arm64" && d.HyperVGeneration == "V1" {
		return invalid("hyper_v_generation V1 cannot start an Arm64 image (Arm64 VMs are generation 2)")
	}
	if err := checkTags(d.Tags); err != nil {
		return err
	}
	if d.Gallery != nil {
		if err := d.Gallery.check(); err != nil {
			return err
		}
	}
	if !d.ManagedImage && d.Gallery == nil {
		return invalid("managed_image is false and there is no gallery: nothing would be published")
	}
	if d.ManagedImage && d.Architecture == "Arm64" {
		return invalid("architecture Arm64 needs \"managed_image\": false and a gallery (managed images are x64 only)")
	}
	return nil
}

// checkImageName applies OBS's rule for image_name: 2 to 63 characters,
// [[:alnum:]]([\w.-]*\w)?.
func checkImageName(s string) error {
	switch {
	case s == "":
		return invalid("image_name is missing")
	case len(s) < 2 || len(s) > 63:
		return invalid("image_name %q must be 2 to 63 characters", s)
	case !imageNameRE.MatchString(s):
		return invalid("image_name %q must start with a letter or digit, end with a letter, digit or '_', and hold only letters, digits, '_', '.' and '-'", s)
	}
	return nil
}

func checkTags(tags map[string]string) error {
	if len(tags) > maxUserTags {
		return invalid("tags has %d entries, at most %d are allowed", len(tags), maxUserTags)
	}
	for k, v := range tags {
		switch {
		case k == "" || len(k) > 512 || !utf8.ValidString(k):
			return invalid("tags: key %q must be 1 to 512 characters", k)
		case strings.ContainsAny(k, "<>%&\\?/"):
			return invalid("tags: key %q must not contain any of < > %% & \\ ? / (Azure rule)", k)
		case strings.HasPrefix(strings.ToLower(k), "cloudupload:"):
			return invalid("tags: key %q must not start with cloudupload: (set by the uploader)", k)
		case len(v) > 256 || !utf8.ValidString(v):
			return invalid("tags: value of %q must be at most 256 characters", k)
		}
	}
	return nil
}

func (g *gallery) check() error {
	switch {
	case g.Name == "":
		return invalid("gallery.name is missing")
	case !galleryRE.MatchString(g.Name):
		return invalid("gallery.name %q must be 1 to 80 of letters, digits, '_' and '.', starting and ending with a letter or digit", g.Name)
	case g.ImageDefinition == "":
		return invalid("gallery.image_definition is missing")
	case !definitionRE.MatchString(g.ImageDefinition):
		return invalid("gallery.image_definition %q must be 1 to 80 of letters, digits, '-', '_' and '.', starting and ending with a letter or digit", g.ImageDefinition)
	case g.Version == "":
		return invalid("gallery.version is missing")
	case !versionRE.MatchString(g.Version):
		return invalid("gallery.version %q is not major.minor.patch (such as 1.0.3)", g.Version)
	case len(g.TargetRegions) > maxTargetRegions:
		return invalid("gallery.target_regions has %d entries, at most %d are allowed", len(g.TargetRegions), maxTargetRegions)
	}
	seen := map[string]bool{}
	var regions []string
	for _, r := range g.TargetRegions {
		if !locationRE.MatchString(r) {
			return invalid("gallery.target_regions: %q is not an Azure region name (such as westeurope)", r)
		}
		if !seen[r] {
			seen[r] = true
			regions = append(regions, r)
		}
	}
	sort.Strings(regions)
	g.TargetRegions = regions
	return nil
}

// archOf maps the job's architecture to Azure's.
func archOf(job targets.Job) (string, error) {
	switch job.Arch {
	case "x86_64", "":
		return "x64", nil
	case "aarch64", "arm64":
		return "Arm64", nil
	}
	return "", invalid("arch %q cannot run on Azure (x86_64 or aarch64)", job.Arch)
}

// blobName is the page blob's name in the container.
func (d *data) blobName() string { return d.ImageName + ".vhd" }

// String never shows the credentials, should data ever be printed.
func (d *data) String() string {
	return fmt.Sprintf("azure image %s in %s/%s (account %s, container %s)", d.ImageName, d.Subscription, d.ResourceGroup, d.StorageAccount, d.Container)
}
