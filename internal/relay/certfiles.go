package relay

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// The settings that name certificate and key files are checked by reading
// them, as start-up would: a file that is missing, unreadable or holds no
// certificate fails check-config, not the first TLS handshake.

// maxPEMFile bounds what is read of one certificate or key file: a system
// CA bundle is a few hundred KiB, and a setting naming /dev/zero must not
// hang the relay.
const maxPEMFile = 8 << 20

// readPEMFile reads a file a setting names, with errors saying what an
// operator can do about it.
func readPEMFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fileError(err)
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.IsDir() {
		return nil, errors.New("is a directory, not a file")
	}
	data, err := io.ReadAll(io.LimitReader(f, maxPEMFile+1))
	if err != nil {
		return nil, fileError(err)
	}
	if len(data) > maxPEMFile {
		return nil, fmt.Errorf("is larger than %d MiB: not a PEM file", maxPEMFile>>20)
	}
	return data, nil
}

// fileError says why a file could not be read, without repeating its path
// (the setting's value shows it).
func fileError(err error) error {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return errors.New("does not exist")
	case errors.Is(err, fs.ErrPermission):
		return errors.New("not readable by the relay's user (permission denied)")
	}
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return fmt.Errorf("cannot read: %v", pe.Err)
	}
	return fmt.Errorf("cannot read: %v", err)
}

// pemCertificates counts the certificates of PEM data that parse.
func pemCertificates(data []byte) int {
	n := 0
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return n
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		if _, err := x509.ParseCertificate(block.Bytes); err == nil {
			n++
		}
	}
}

// caFile reads SSL_CERT_FILE: Go reads it for every HTTPS connection the
// relay makes, and a file it cannot use makes every JWKS fetch fail.
func caFile(_ *config, v string) error {
	if v == "" {
		return nil
	}
	data, err := readPEMFile(v)
	if err != nil {
		return fmt.Errorf("%w; name a PEM file of CA certificates, or leave it unset for the system's", err)
	}
	if pemCertificates(data) == 0 {
		return errors.New("holds no PEM certificate (-----BEGIN CERTIFICATE-----); name a PEM file of CA certificates, or leave it unset for the system's")
	}
	return nil
}

// caDirs reads SSL_CERT_DIR, directories separated as Go splits them;
// each must hold a PEM certificate.
func caDirs(_ *config, v string) error {
	if v == "" {
		return nil
	}
	var problems []string
	for _, dir := range filepath.SplitList(v) {
		if dir == "" {
			continue
		}
		if err := caDir(dir); err != nil {
			problems = append(problems, fmt.Sprintf("%s %v", dir, err))
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("%s; name directories of PEM CA certificates, or leave it unset for the system's", strings.Join(problems, "; "))
	}
	return nil
}

func caDir(dir string) error {
	st, err := os.Stat(dir)
	if err != nil {
		return fileError(err)
	}
	if !st.IsDir() {
		return errors.New("is not a directory")
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fileError(err)
	}
	for _, e := range entries {
		// Go reads every file of the directory, following links.
		data, err := readPEMFile(filepath.Join(dir, e.Name()))
		if err == nil && pemCertificates(data) > 0 {
			return nil
		}
	}
	return errors.New("holds no PEM certificate")
}

// tlsCertFile reads RELAY_TLS_CERT_FILE: it must hold a certificate; its
// key is checked against it with RELAY_TLS_KEY_FILE, which follows.
func tlsCertFile(c *config, v string) error {
	c.TLSCertFile = v
	if v == "" {
		return nil
	}
	_, err := readTLSCertificate(v)
	return err
}

func readTLSCertificate(path string) ([]byte, error) {
	data, err := readPEMFile(path)
	if err != nil {
		return nil, err
	}
	if pemCertificates(data) == 0 {
		return nil, errors.New("holds no PEM certificate (-----BEGIN CERTIFICATE-----); give the server certificate, then any intermediates")
	}
	return data, nil
}

// tlsKeyFile reads RELAY_TLS_KEY_FILE: both TLS files or neither, the key
// a private key, and one that matches the certificate.
func tlsKeyFile(c *config, v string) error {
	c.TLSKeyFile = v
	switch {
	case v == "" && c.TLSCertFile == "":
		return nil
	case v == "":
		return errors.New("must be set when RELAY_TLS_CERT_FILE is: set both to serve HTTPS, or neither for plain HTTP")
	case c.TLSCertFile == "":
		return errors.New("is set but RELAY_TLS_CERT_FILE is not: set both to serve HTTPS, or neither for plain HTTP")
	}
	keyPEM, err := readPEMFile(v)
	if err != nil {
		return err
	}
	if err := checkPrivateKeyPEM(keyPEM); err != nil {
		return err
	}
	certPEM, err := readTLSCertificate(c.TLSCertFile)
	if err != nil {
		return nil // RELAY_TLS_CERT_FILE's own error says why
	}
	if _, err := tls.X509KeyPair(certPEM, keyPEM); err != nil {
		return fmt.Errorf("does not go with the certificate of RELAY_TLS_CERT_FILE (%s): %v", c.TLSCertFile, err)
	}
	return nil
}

// checkPrivateKeyPEM says what is wrong with PEM data that should hold an
// unencrypted private key, in the words an operator needs: a public key
// or certificate given by mistake, an encrypted key, no key at all.
func checkPrivateKeyPEM(data []byte) error {
	var types []string
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		switch {
		case block.Type == "ENCRYPTED PRIVATE KEY" || strings.Contains(block.Headers["Proc-Type"], "ENCRYPTED"):
			return errors.New("is an encrypted private key, which is not supported; decrypt it with: openssl pkey -in KEY.pem -out KEY-plain.pem")
		case strings.HasSuffix(block.Type, "PRIVATE KEY"):
			return nil
		}
		types = append(types, block.Type)
	}
	for _, t := range types {
		if t == "PUBLIC KEY" || t == "RSA PUBLIC KEY" || t == "CERTIFICATE" {
			return fmt.Errorf("holds a %s, not a private key; give the private key", strings.ToLower(t))
		}
	}
	return errors.New("holds no PEM private key (-----BEGIN PRIVATE KEY-----)")
}
