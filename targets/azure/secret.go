package azure

import (
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/cloudupload/cloudupload/internal/lazyre"
)

// The OBS frontend encrypts application_id and application_key with the
// server's public key (GET /cloudupload/_pubkey): RSA with PKCS#1 v1.5
// padding (Ruby's OpenSSL::PKey::RSA#public_encrypt default), then Ruby's
// Base64.encode64 (newlines every 60 characters). The uploader decrypts
// them with the private key at CLOUDUPLOAD_PRIVKEY, which the server hands
// to every uploader it runs (validate included).
//
// PKCS#1 v1.5 decryption answers "valid padding or not", which an attacker
// able to submit ciphertexts could use as an oracle. The target narrows it:
// a value must decrypt AND look like what it is (a GUID for the client id,
// 8 to 256 printable characters for the secret), and every failure gives
// the same message, so a forged ciphertext with valid padding is rejected
// like any other.

// decryptField decrypts the encrypted value of field with the private key
// at privkey and checks the plain text with looksRight. Errors name the
// field, never the value.
func decryptField(field string, value *string, privkey string, looksRight func(string) bool) (string, error) {
	if value == nil || strings.TrimSpace(*value) == "" {
		return "", invalid("%s is missing (the RSA-encrypted, base64-encoded value OBS sends)", field)
	}
	ct, err := base64.StdEncoding.DecodeString(strings.Join(strings.Fields(*value), ""))
	if err != nil {
		return "", invalid("%s is not base64 (it must be encrypted with this server's public key, GET /cloudupload/_pubkey)", field)
	}
	key, err := loadPrivateKey(privkey)
	if err != nil {
		return "", fmt.Errorf("decrypt %s: %w", field, err)
	}
	if len(ct) != key.Size() {
		return "", invalid("%s does not decrypt with this server's key (encrypt it with GET /cloudupload/_pubkey)", field)
	}
	//lint:ignore SA1019 OBS's frontend encrypts with PKCS#1 v1.5; see above for how the oracle is narrowed
	plain, err := rsa.DecryptPKCS1v15(nil, key, ct)
	if err != nil || !looksRight(string(plain)) {
		return "", invalid("%s does not decrypt with this server's key (encrypt it with GET /cloudupload/_pubkey)", field)
	}
	return string(plain), nil
}

var guidRE = lazyre.New(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

// checkClientID accepts an application (client) id: a GUID.
func checkClientID(s string) bool { return guidRE.MatchString(s) }

// checkSecret accepts a client secret: 8 to 256 printable ASCII characters.
func checkSecret(s string) bool {
	if len(s) < 8 || len(s) > 256 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// loadPrivateKey reads the server's RSA private key (PKCS#8 or PKCS#1 PEM).
func loadPrivateKey(path string) (*rsa.PrivateKey, error) {
	if path == "" {
		return nil, errors.New("the server gave no private key (CLOUDUPLOAD_PRIVKEY is not set)")
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("private key: %w", err)
	}
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, fmt.Errorf("private key %s is not PEM", path)
	}
	var k any
	switch block.Type {
	case "PRIVATE KEY":
		k, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		k, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("private key %s: PEM block %q is not a private key", path, block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("private key %s: %w", path, err)
	}
	rk, ok := k.(*rsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("private key %s is %T, not RSA", path, k)
	}
	return rk, nil
}
