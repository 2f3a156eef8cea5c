package awstest

import (
	"net/http"
	"testing"
)

func TestStart(t *testing.T) {
	m := Start(t)
	resp, err := http.Get(m.URL + "/moto-api/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("moto answered %s", resp.Status)
	}
	m.Reset(t)
}
