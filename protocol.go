package cloudupload

// UploaderProtocol is the line this project's uploader prints for
// `clouduploader protocol`. An uploader that prints it also answers
// `validate <target>` (target data on stdin; exit 0 valid, 2 invalid with
// one line on stderr). Any other program with OBS's argv (OBS's own
// clouduploader, a site's script) can be the uploader too; the daemon then
// creates jobs without checking their target data, as OBS did.
const UploaderProtocol = "cloudupload-uploader 1"
