// Package benchutil holds what the upload benchmarks of several targets
// share: the baseline of an upload that decodes, which is reading the same
// image's disk to nothing. Only test code imports it.
package benchutil
