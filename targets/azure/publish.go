package azure

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/compute/armcompute/v6"
	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/storage/armstorage/v2"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/pageblob"

	"github.com/cloudupload/cloudupload"
	"github.com/cloudupload/cloudupload/targets"
	"github.com/cloudupload/cloudupload/uploader/image"
)

// Upload implements targets.Target.
func (t *Target) Upload(ctx context.Context, req targets.Request) (string, error) {
	getenv := req.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	d, err := parseData(req.Data, req.Job, getenv("CLOUDUPLOAD_PRIVKEY"))
	if err != nil {
		return "", err
	}
	e, err := endpointsFrom(getenv)
	if err != nil {
		return "", err
	}
	log := req.Log
	if log == nil {
		log = targets.NewLog(io.Discard)
	}
	r := &run{
		t: t, e: e, d: d, job: req.Job, img: req.Image, log: log,
		token: jobToken(req.Job, d, req.Image),
	}
	res, err := r.publish(ctx)
	if err != nil {
		r.cleanup()
		return "", tidy(err)
	}
	return res, nil
}

// run is one upload's state.
type run struct {
	t     *Target
	e     endpoints
	d     *data
	job   targets.Job
	img   targets.Image
	log   *targets.Log
	token string

	location   string
	accountID  string // the storage account's resource id
	blob       *pageblob.Client
	images     *armcompute.ImagesClient
	versions   *armcompute.GalleryImageVersionsClient
	definition *armcompute.GalleryImagesClient

	sent pageStats // what the page upload did

	// What this run created, removed again on failure.
	createdBlob    bool
	createdImage   bool
	createdVersion bool
}

// publish does the work; on error the caller runs cleanup.
func (r *run) publish(ctx context.Context) (string, error) {
	d := r.d
	size, err := r.img.DiskSize(ctx)
	if err != nil {
		return "", err
	}
	if size <= 0 {
		return "", cloudupload.Errorf(cloudupload.EINVALID, "image %s holds an empty disk", r.job.Filename)
	}
	gen := d.HyperVGeneration
	if gen == "" {
		if gen, err = r.guessGeneration(ctx); err != nil {
			return "", err
		}
	}
	r.log.Printf("azure: publishing %s as image %q in subscription %s, resource group %s (arch %s, generation %s, %s)",
		r.job.Filename, d.ImageName, d.Subscription, d.ResourceGroup, d.Architecture, gen, d.OSType)

	tenant := d.Tenant
	if tenant == "" {
		if tenant, err = r.t.discoverTenant(ctx, r.e, d.Subscription); err != nil {
			return "", err
		}
		r.log.Printf("azure: subscription %s belongs to tenant %s", d.Subscription, tenant)
	}
	cred, err := r.t.credential(r.e, tenant, d)
	if err != nil {
		return "", err
	}
	opts := r.t.armOptions(r.e)
	accounts, err := armstorage.NewAccountsClient(d.Subscription, cred, opts)
	if err != nil {
		return "", err
	}
	if r.images, err = armcompute.NewImagesClient(d.Subscription, cred, opts); err != nil {
		return "", err
	}
	if r.versions, err = armcompute.NewGalleryImageVersionsClient(d.Subscription, cred, opts); err != nil {
		return "", err
	}
	if r.definition, err = armcompute.NewGalleryImagesClient(d.Subscription, cred, opts); err != nil {
		return "", err
	}
	done := r.log.Step("azure: look up storage account %s", d.StorageAccount)
	acct, err := accounts.GetProperties(ctx, d.ResourceGroup, d.StorageAccount, nil)
	if err != nil {
		return "", r.armError(err, "storage account %s in resource group %s", d.StorageAccount, d.ResourceGroup)
	}
	done()
	r.accountID = deref(acct.ID)
	r.location = d.Location
	if r.location == "" {
		r.location = deref(acct.Location)
	}
	if r.location == "" {
		return "", errors.New("the storage account has no location; set location in the target data")
	}
	if err := r.checkDefinition(ctx, gen); err != nil {
		return "", err
	}
	if r.blob, err = r.blobClient(ctx, cred, accounts); err != nil {
		return "", err
	}
	if err := r.uploadBlob(ctx, size); err != nil {
		return "", err
	}

	var result []string
	var imageID string
	if d.ManagedImage {
		if imageID, err = r.createImage(ctx, gen); err != nil {
			return "", err
		}
		result = append(result, imageID)
	}
	if d.Gallery != nil {
		id, err := r.createVersion(ctx, imageID)
		if err != nil {
			return "", err
		}
		result = append(result, id)
	}
	if !d.KeepBlob {
		r.deleteBlob(ctx)
	}
	return strings.Join(result, ","), nil
}

// guessGeneration says V2 for a disk with a GPT (UEFI boot, as kiwi
// builds them), else V1, from the disk's first two sectors.
func (r *run) guessGeneration(ctx context.Context) (string, error) {
	rc, err := r.img.OpenDisk(ctx)
	if err != nil {
		return "", err
	}
	defer rc.Close()
	b := make([]byte, 1024)
	if _, err := io.ReadFull(rc, b); err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		return "", fmt.Errorf("read the partition table: %w", err)
	}
	if string(b[512:520]) == "EFI PART" {
		return "V2", nil
	}
	return "V1", nil
}

// blobClient returns the page blob's client: with the principal's token
// when it has data-plane rights (Storage Blob Data Contributor), else with
// the account key from ARM's listKeys (Contributor on the account).
func (r *run) blobClient(ctx context.Context, cred azcore.TokenCredential, accounts *armstorage.AccountsClient) (*pageblob.Client, error) {
	d := r.d
	cu := strings.ReplaceAll(r.e.blob, "{account}", d.StorageAccount) + "/" + d.Container
	copts := &container.ClientOptions{ClientOptions: r.t.clientOptions(r.e), Audience: storageAudience}
	copts.Transport = r.t.blobTransport(r.e.workers)
	cc, err := container.NewClient(cu, cred, copts)
	if err != nil {
		return nil, err
	}
	pb := cc.NewPageBlobClient(d.blobName())
	_, err = pb.GetProperties(ctx, nil)
	switch st := httpStatus(err); {
	case err == nil || bloberror.HasCode(err, bloberror.BlobNotFound) || st == 404:
		r.log.Printf("azure: writing to %s with the service principal's token (data-plane role)", cu)
		return pb, nil
	case st != 401 && st != 403:
		return nil, fmt.Errorf("look up blob %s: %w", d.blobName(), err)
	}
	r.log.Printf("azure: the service principal's token gives no access to the blob (%s); using the account key from listKeys", errorCode(err))
	keys, err := accounts.ListKeys(ctx, d.ResourceGroup, d.StorageAccount, nil)
	if err != nil {
		return nil, r.armError(err, "keys of storage account %s (the principal needs Storage Blob Data Contributor or listKeys)", d.StorageAccount)
	}
	var key string
	for _, k := range keys.Keys {
		if k != nil && k.Value != nil && (k.Permissions == nil || strings.EqualFold(string(*k.Permissions), "full")) {
			key = *k.Value
			break
		}
	}
	if key == "" {
		return nil, fmt.Errorf("storage account %s: listKeys returned no key with full permissions", d.StorageAccount)
	}
	skc, err := container.NewSharedKeyCredential(d.StorageAccount, key)
	if err != nil {
		return nil, fmt.Errorf("storage account %s: the account key is not usable", d.StorageAccount)
	}
	cc, err = container.NewClientWithSharedKeyCredential(cu, skc, copts)
	if err != nil {
		return nil, err
	}
	r.log.Printf("azure: writing to %s with the storage account key", cu)
	return cc.NewPageBlobClient(d.blobName()), nil
}

// maxPageBlob is the largest page blob Azure stores.
const maxPageBlob = 8 << 40

// uploadBlob writes the disk and its VHD footer into the page blob,
// creating it, resuming this job's own unfinished blob or reusing its
// finished one. A blob of that name made by anything else is a conflict.
func (r *run) uploadBlob(ctx context.Context, size int64) error {
	d := r.d
	vhdSize := (size + 1<<20 - 1) &^ (1<<20 - 1) // Azure wants whole MiB
	blobSize := vhdSize + image.VHDFooterSize
	if blobSize > maxPageBlob {
		return cloudupload.Errorf(cloudupload.EINVALID, "image %s holds a disk of %d bytes; a page blob holds at most 8 TiB", r.job.Filename, size)
	}
	name := d.Container + "/" + d.blobName()
	props, err := r.blob.GetProperties(ctx, nil)
	switch {
	case err == nil:
		meta := props.Metadata
		if metaValue(meta, metaToken) != r.token {
			return cloudupload.Errorf(cloudupload.EINVALID, "blob %s in storage account %s exists and was not written by this job (choose another image_name or remove it)", name, d.StorageAccount)
		}
		if deref(props.ContentLength) != blobSize {
			return fmt.Errorf("blob %s of this job has %d bytes, want %d", name, deref(props.ContentLength), blobSize)
		}
		if metaValue(meta, metaState) == "complete" {
			r.log.Printf("azure: blob %s was written completely by an earlier run of this job; reusing it", name)
			return nil
		}
		r.log.Printf("azure: blob %s was left unfinished by an earlier run of this job; writing it again", name)
		r.createdBlob = true
	case httpStatus(err) == 404:
		_, err := r.blob.Create(ctx, blobSize, &pageblob.CreateOptions{
			Metadata:         r.metadata("uploading"),
			AccessConditions: &blob.AccessConditions{ModifiedAccessConditions: &blob.ModifiedAccessConditions{IfNoneMatch: to.Ptr(azcore.ETagAny)}},
		})
		if err != nil {
			if bloberror.HasCode(err, bloberror.BlobAlreadyExists, bloberror.ConditionNotMet) {
				return cloudupload.Errorf(cloudupload.EINVALID, "blob %s in storage account %s was created by someone else meanwhile", name, d.StorageAccount)
			}
			return fmt.Errorf("create page blob %s: %w", name, err)
		}
		r.createdBlob = true
	default:
		return fmt.Errorf("look up blob %s: %w", name, err)
	}

	var rc io.ReadCloser
	if r.img.Format() == "raw" {
		// A raw file is the disk: when it is sparse, its holes need not be read.
		if sp := image.OpenSparse(r.img.Path(), size); sp != nil {
			r.log.Printf("azure: %s is a sparse file: reading only where it holds data", r.job.Filename)
			rc = sp
		}
	}
	if rc == nil {
		if rc, err = r.img.OpenDisk(ctx); err != nil {
			return err
		}
	}
	defer rc.Close()
	progress := r.log.Progress("azure: disk", size)
	w := &pageWriter{api: r.blob, workers: r.e.workers, progress: progress}
	start := time.Now()
	r.log.Printf("azure: writing %s of disk into page blob %s (%s with the footer), %d parallel writes, zero pages skipped",
		targets.MiB(size), name, targets.MiB(blobSize), w.workers)
	stats, err := w.writeDisk(ctx, rc, size)
	r.sent = stats
	if err != nil {
		return err
	}
	progress.Done()
	footer := image.VHDFooter(vhdSize, r.created(), r.footerID())
	if err := w.put(ctx, vhdSize, footer); err != nil {
		return fmt.Errorf("write the VHD footer: %w", err)
	}
	r.log.Printf("azure: sent %s in %d requests, skipped %s of zeros, in %s", targets.MiB(stats.Sent+int64(len(footer))),
		stats.Requests+1, targets.MiB(stats.Skipped), targets.Round(time.Since(start)))
	if _, err := r.blob.SetMetadata(ctx, r.metadata("complete"), nil); err != nil {
		return fmt.Errorf("mark blob %s complete: %w", name, err)
	}
	return nil
}

func (r *run) metadata(state string) map[string]*string {
	return map[string]*string{metaJob: to.Ptr(r.job.ID), metaToken: to.Ptr(r.token), metaState: to.Ptr(state)}
}

// created is the footer's timestamp: the image file's time, so a rerun
// writes the same footer.
func (r *run) created() time.Time {
	if fi, err := os.Stat(r.img.Path()); err == nil {
		return fi.ModTime()
	}
	return time.Now()
}

func (r *run) footerID() [16]byte {
	var id [16]byte
	sum := sha256.Sum256([]byte(r.token))
	copy(id[:], sum[:])
	return id
}

// metaValue looks a metadata key up whatever case the service (or Go's
// header canonicalisation) gave it.
func metaValue(meta map[string]*string, key string) string {
	for k, v := range meta {
		if strings.EqualFold(k, key) && v != nil {
			return *v
		}
	}
	return ""
}

// tags are the user's plus the uploader's own.
func (r *run) tags() map[string]*string {
	t := map[string]*string{}
	for k, v := range r.d.Tags {
		t[k] = to.Ptr(v)
	}
	t[tagJob] = to.Ptr(r.job.ID)
	t[tagToken] = to.Ptr(r.token)
	t[tagImage] = to.Ptr(r.job.Filename)
	return t
}

func (r *run) blobURL() string {
	u, err := url.Parse(r.blob.URL())
	if err != nil {
		return r.blob.URL()
	}
	u.RawQuery = ""
	return u.String()
}

// createImage makes the managed image from the blob, or reuses this job's.
func (r *run) createImage(ctx context.Context, gen string) (string, error) {
	d := r.d
	existing, err := r.images.Get(ctx, d.ResourceGroup, d.ImageName, nil)
	switch {
	case err == nil:
		if deref(existing.Tags[tagToken]) == r.token && deref(existing.Properties.ProvisioningState) == "Succeeded" {
			r.log.Printf("azure: managed image %s was made by an earlier run of this job; reusing it", d.ImageName)
			return deref(existing.ID), nil
		}
		return "", cloudupload.Errorf(cloudupload.EINVALID, "managed image %s exists in resource group %s and was not made by this job (choose another image_name or remove it)", d.ImageName, d.ResourceGroup)
	case httpStatus(err) != 404:
		return "", r.armError(err, "managed image %s", d.ImageName)
	}
	done := r.log.Step("azure: create managed image %s in %s", d.ImageName, r.location)
	r.createdImage = true
	poller, err := r.images.BeginCreateOrUpdate(ctx, d.ResourceGroup, d.ImageName, armcompute.Image{
		Location: to.Ptr(r.location),
		Tags:     r.tags(),
		Properties: &armcompute.ImageProperties{
			HyperVGeneration: to.Ptr(armcompute.HyperVGenerationTypes(gen)),
			StorageProfile: &armcompute.ImageStorageProfile{
				OSDisk: &armcompute.ImageOSDisk{
					OSType:  to.Ptr(armcompute.OperatingSystemTypes(d.OSType)),
					OSState: to.Ptr(armcompute.OperatingSystemStateTypesGeneralized),
					BlobURI: to.Ptr(r.blobURL()),
					Caching: to.Ptr(armcompute.CachingTypesReadWrite),
				},
			},
		},
	}, nil)
	if err != nil {
		return "", r.armError(err, "create managed image %s", d.ImageName)
	}
	res, err := poller.PollUntilDone(ctx, &runtime.PollUntilDoneOptions{Frequency: r.t.poll})
	if err != nil {
		return "", r.armError(err, "create managed image %s", d.ImageName)
	}
	done()
	return deref(res.ID), nil
}

// checkDefinition makes sure the gallery image definition exists and
// fits the image, before anything is uploaded.
func (r *run) checkDefinition(ctx context.Context, gen string) error {
	g := r.d.Gallery
	if g == nil {
		return nil
	}
	def, err := r.definition.Get(ctx, r.d.ResourceGroup, g.Name, g.ImageDefinition, nil)
	if err != nil {
		if httpStatus(err) == 404 {
			return cloudupload.Errorf(cloudupload.EINVALID, "gallery image definition %s/%s not found in resource group %s (create it first: az sig image-definition create)", g.Name, g.ImageDefinition, r.d.ResourceGroup)
		}
		return r.armError(err, "gallery image definition %s/%s", g.Name, g.ImageDefinition)
	}
	if p := def.Properties; p != nil {
		if p.Architecture != nil && !strings.EqualFold(string(*p.Architecture), r.d.Architecture) {
			return cloudupload.Errorf(cloudupload.EINVALID, "gallery image definition %s/%s is for %s, the image is %s", g.Name, g.ImageDefinition, *p.Architecture, r.d.Architecture)
		}
		if p.HyperVGeneration != nil && !strings.EqualFold(string(*p.HyperVGeneration), gen) {
			return cloudupload.Errorf(cloudupload.EINVALID, "gallery image definition %s/%s is generation %s, the image %s (set hyper_v_generation)", g.Name, g.ImageDefinition, *p.HyperVGeneration, gen)
		}
		if p.OSType != nil && !strings.EqualFold(string(*p.OSType), r.d.OSType) {
			return cloudupload.Errorf(cloudupload.EINVALID, "gallery image definition %s/%s is for %s, the image is %s", g.Name, g.ImageDefinition, *p.OSType, r.d.OSType)
		}
	}
	return nil
}

// createVersion publishes the gallery image version from the managed image
// (when one was made) or from the blob, or reuses this job's.
func (r *run) createVersion(ctx context.Context, imageID string) (string, error) {
	d, g := r.d, r.d.Gallery
	what := fmt.Sprintf("gallery image version %s/%s/%s", g.Name, g.ImageDefinition, g.Version)
	existing, err := r.versions.Get(ctx, d.ResourceGroup, g.Name, g.ImageDefinition, g.Version, nil)
	switch {
	case err == nil:
		if deref(existing.Tags[tagToken]) == r.token && existing.Properties != nil &&
			existing.Properties.ProvisioningState != nil && *existing.Properties.ProvisioningState == armcompute.GalleryProvisioningStateSucceeded {
			r.log.Printf("azure: %s was made by an earlier run of this job; reusing it", what)
			return deref(existing.ID), nil
		}
		return "", cloudupload.Errorf(cloudupload.EINVALID, "%s exists and was not made by this job (choose another gallery.version)", what)
	case httpStatus(err) != 404:
		return "", r.armError(err, "%s", what)
	}
	regions := []*armcompute.TargetRegion{{Name: to.Ptr(r.location)}}
	for _, reg := range g.TargetRegions {
		if reg != r.location {
			regions = append(regions, &armcompute.TargetRegion{Name: to.Ptr(reg)})
		}
	}
	storage := &armcompute.GalleryImageVersionStorageProfile{}
	if imageID != "" {
		storage.Source = &armcompute.GalleryArtifactVersionFullSource{ID: to.Ptr(imageID)}
	} else {
		storage.OSDiskImage = &armcompute.GalleryOSDiskImage{Source: &armcompute.GalleryDiskImageSource{
			StorageAccountID: to.Ptr(r.accountID), URI: to.Ptr(r.blobURL()),
		}}
	}
	names := make([]string, len(regions))
	for i, reg := range regions {
		names[i] = *reg.Name
	}
	done := r.log.Step("azure: create %s, replicated to %s", what, strings.Join(names, ", "))
	r.createdVersion = true
	poller, err := r.versions.BeginCreateOrUpdate(ctx, d.ResourceGroup, g.Name, g.ImageDefinition, g.Version, armcompute.GalleryImageVersion{
		Location: to.Ptr(r.location),
		Tags:     r.tags(),
		Properties: &armcompute.GalleryImageVersionProperties{
			PublishingProfile: &armcompute.GalleryImageVersionPublishingProfile{TargetRegions: regions},
			StorageProfile:    storage,
		},
	}, nil)
	if err != nil {
		return "", r.armError(err, "create %s", what)
	}
	res, err := poller.PollUntilDone(ctx, &runtime.PollUntilDoneOptions{Frequency: r.t.poll})
	if err != nil {
		return "", r.armError(err, "create %s", what)
	}
	done()
	return deref(res.ID), nil
}

// armError says what failed, plainly for the commonest causes.
func (r *run) armError(err error, format string, args ...any) error {
	what := fmt.Sprintf(format, args...)
	if why := authFailure(err); why != "" {
		return cloudupload.Errorf(cloudupload.EINVALID, "%s: cannot sign in as the service principal (check application_id, application_key and tenant): %s", what, why)
	}
	switch st := httpStatus(err); {
	case st == 403:
		return cloudupload.Errorf(cloudupload.EINVALID, "%s: the service principal is not allowed (%s); see the role it needs in the azure target's documentation", what, errorCode(err))
	case st == 404 && errorCode(err) == "ResourceGroupNotFound":
		return cloudupload.Errorf(cloudupload.EINVALID, "%s: resource group %s not found", what, r.d.ResourceGroup)
	case st == 404:
		return cloudupload.Errorf(cloudupload.EINVALID, "%s: not found (%s)", what, errorCode(err))
	}
	return fmt.Errorf("%s: %w", what, tidy(err))
}

// deleteBlob removes the blob (keep_blob false, after success).
func (r *run) deleteBlob(ctx context.Context) {
	if _, err := r.blob.Delete(ctx, &blob.DeleteOptions{DeleteSnapshots: to.Ptr(blob.DeleteSnapshotsOptionTypeInclude)}); err != nil {
		r.log.Printf("azure: could not delete blob %s/%s: %v", r.d.Container, r.d.blobName(), tidy(err))
		return
	}
	r.log.Printf("azure: deleted blob %s/%s (keep_blob is false)", r.d.Container, r.d.blobName())
}

// cleanup removes, with a fresh context, what this run created: the
// gallery version, the managed image, the blob.
func (r *run) cleanup() {
	if !r.createdBlob && !r.createdImage && !r.createdVersion {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
	defer cancel()
	done := r.log.Step("azure: removing what this job created")
	d := r.d
	if r.createdVersion {
		g := d.Gallery
		if err := pollDelete(ctx, r.t.poll, func() (*runtime.Poller[armcompute.GalleryImageVersionsClientDeleteResponse], error) {
			return r.versions.BeginDelete(ctx, d.ResourceGroup, g.Name, g.ImageDefinition, g.Version, nil)
		}); err != nil {
			r.log.Printf("azure: could not delete gallery image version %s/%s/%s: %v", g.Name, g.ImageDefinition, g.Version, tidy(err))
		} else {
			r.log.Printf("azure: removed gallery image version %s/%s/%s", g.Name, g.ImageDefinition, g.Version)
		}
	}
	if r.createdImage {
		if err := pollDelete(ctx, r.t.poll, func() (*runtime.Poller[armcompute.ImagesClientDeleteResponse], error) {
			return r.images.BeginDelete(ctx, d.ResourceGroup, d.ImageName, nil)
		}); err != nil {
			r.log.Printf("azure: could not delete managed image %s: %v", d.ImageName, tidy(err))
		} else {
			r.log.Printf("azure: removed managed image %s", d.ImageName)
		}
	}
	if r.createdBlob {
		_, err := r.blob.Delete(ctx, &blob.DeleteOptions{DeleteSnapshots: to.Ptr(blob.DeleteSnapshotsOptionTypeInclude)})
		if err != nil && httpStatus(err) != 404 {
			r.log.Printf("azure: could not delete blob %s/%s: %v", d.Container, d.blobName(), tidy(err))
		} else {
			r.log.Printf("azure: removed blob %s/%s", d.Container, d.blobName())
		}
	}
	done()
}

// pollDelete starts a deletion and waits for it; a resource that is not
// there counts as deleted.
func pollDelete[T any](ctx context.Context, freq time.Duration, begin func() (*runtime.Poller[T], error)) error {
	p, err := begin()
	if err == nil {
		_, err = p.PollUntilDone(ctx, &runtime.PollUntilDoneOptions{Frequency: freq})
	}
	if err != nil && httpStatus(err) != 404 {
		return err
	}
	return nil
}

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}
