package ec2

import (
	"os"
	"regexp"
	"testing"
)

// TestREADMEExample: the ec2 target data the README shows is accepted.
func TestREADMEExample(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`--data-binary '(\{"arn"[^']*\})'[^\n]*\n[^\n]*target=ec2`).FindSubmatch(readme)
	if m == nil {
		t.Fatal("no ec2 example (curl --data-binary '{\"arn\":…}' … target=ec2) in the README")
	}
	job := testJob("1", "appliance.x86_64.raw.xz")
	if err := New().Check(job, m[1], os.Getenv); err != nil {
		t.Errorf("the README's ec2 target data %s is refused: %v", m[1], err)
	}
}
