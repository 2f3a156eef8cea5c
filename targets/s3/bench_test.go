package s3

// childEnv, when set, makes the test binary run one upload for the
// benchmark instead of the tests (see BenchmarkUpload).
const childEnv = "CLOUDUPLOAD_S3_BENCH_CHILD"

func benchChild() {}
