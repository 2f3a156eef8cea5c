package cloudupload

// UploaderProtocol is the line this project's uploader prints for
// `clouduploader protocol`. An uploader that prints it also answers
// `validate <target>` (target data on stdin; exit 0 valid, 2 invalid with
// one line on stderr). Any other program with OBS's argv (OBS's own
// clouduploader, a site's script) can be the uploader too; the daemon then
// creates jobs without checking their target data, as OBS did.
const UploaderProtocol = "cloudupload-uploader 1"

// ValidateRequest is one request of `clouduploader validate-stream`, which
// the daemon keeps running so that a create does not start a process: one
// JSON object per line on its standard input. Env holds the job's
// variables (CLOUDUPLOAD_PROJECT, …) that `validate` would find in its
// environment; Data is the target data.
type ValidateRequest struct {
	Target string            `json:"target"`
	Env    map[string]string `json:"env"`
	Data   []byte            `json:"data"`
}

// ValidateResponse answers one ValidateRequest, one JSON object per line on
// standard output. Status is what `validate` would exit with: 0 valid, 2
// invalid (Message names the field), anything else a failure to check
// (Message says why). validate-stream exits 0 at the end of its input.
type ValidateResponse struct {
	Status  int    `json:"status"`
	Message string `json:"message"`
}
