package main

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/cloudupload/cloudupload/internal/atomicfile"
)

// KeyBits is the size of a generated key pair.
const KeyBits = 3072

// loadKeys returns the PEM public key and the private key's path. Without
// --pubkey and --privkey, the pair lives in STATE/keys and is generated on
// first start (private key mode 0600).
func loadKeys(stateDir, pubPath, privPath string) (pub []byte, priv string, generated bool, err error) {
	if pubPath == "" && privPath == "" {
		dir := filepath.Join(stateDir, "keys")
		pubPath, privPath = filepath.Join(dir, "pubkey.pem"), filepath.Join(dir, "privkey.pem")
		if _, err := os.Stat(privPath); errors.Is(err, fs.ErrNotExist) {
			if err := generateKeys(dir, pubPath, privPath); err != nil {
				return nil, "", false, fmt.Errorf("generate key pair: %w", err)
			}
			generated = true
		}
	}
	if privPath != "" {
		if privPath, err = filepath.Abs(privPath); err != nil {
			return nil, "", false, err
		}
	}
	if pubPath != "" {
		pub, err = os.ReadFile(pubPath)
		if err != nil {
			return nil, "", false, fmt.Errorf("public key: %w", err)
		}
		return pub, privPath, generated, nil
	}
	// Only a private key: derive the public key from it.
	b, err := os.ReadFile(privPath)
	if err != nil {
		return nil, "", false, fmt.Errorf("private key: %w", err)
	}
	pub, err = publicFromPrivate(b)
	if err != nil {
		return nil, "", false, fmt.Errorf("private key %s: %w", privPath, err)
	}
	return pub, privPath, generated, nil
}

func publicFromPrivate(b []byte) ([]byte, error) {
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, errors.New("not PEM")
	}
	var key any
	var err error
	switch block.Type {
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("PEM block %q is not a private key", block.Type)
	}
	if err != nil {
		return nil, err
	}
	k, ok := key.(*rsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("key of type %T is not RSA", key)
	}
	der, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), nil
}

// generateKeys writes a new RSA key pair, each file atomically.
func generateKeys(dir, pubPath, privPath string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	k, err := rsa.GenerateKey(rand.Reader, KeyBits)
	if err != nil {
		return err
	}
	privDER, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return err
	}
	pubDER, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(pubPath, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}), 0o644); err != nil {
		return err
	}
	// The private key last: its presence means the pair is complete.
	return atomicfile.WriteFile(privPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: privDER}), 0o600)
}
