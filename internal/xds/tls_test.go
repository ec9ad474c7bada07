package xds_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/appquota/appquota/internal/xds"
)

// selfSigned returns a certificate for localhost and 127.0.0.1 that is its
// own CA, and a pool that trusts it.
func selfSigned(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "appquota-xds-test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
}

// tryReceive opens a stream, asks for the configuration and returns the
// first error on the way to receiving it.
func tryReceive(t *testing.T, addr string, opts ...grpc.DialOption) error {
	t.Helper()
	conn, err := grpc.NewClient(addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		return err
	}
	// A failed stream reports its error on Recv, not Send.
	_ = stream.Send(&discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: "ratelimit"}, TypeUrl: xds.TypeURL})
	_, err = stream.Recv()
	return err
}

func TestTLS(t *testing.T) {
	cert, pool := selfSigned(t)
	// GetCertificate, as a certwatcher supplies it, so rotation is followed.
	var served atomic.Int32
	s := serve(t, xds.Options{TLS: &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			served.Add(1)
			return &cert, nil
		},
	}})
	s.publish(t, "1-a", testConfig("chat", "chat"))

	a := connect(t, s.addr, "ratelimit-tls", grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
		RootCAs:    pool,
		ServerName: "localhost",
		MinVersion: tls.VersionTLS12,
	})))
	a.recv("1-a")
	a.ack()
	s.waitAcked(t, "1-a", 1)
	if served.Load() == 0 {
		t.Error("the handshake did not ask GetCertificate")
	}

	// Neither plaintext nor a client that does not trust the certificate
	// gets a configuration.
	for name, creds := range map[string]credentials.TransportCredentials{
		"plaintext": insecure.NewCredentials(),
		"untrusted": credentials.NewTLS(&tls.Config{ServerName: "localhost", RootCAs: x509.NewCertPool(), MinVersion: tls.VersionTLS12}),
	} {
		if err := tryReceive(t, s.addr, grpc.WithTransportCredentials(creds)); err == nil {
			t.Errorf("%s client received a configuration", name)
		} else {
			t.Logf("%s client: %v", name, err)
		}
	}
	if st := s.Status(); len(st) != 1 || st[0].NodeID != "ratelimit-tls" {
		t.Errorf("Status() = %+v, want only the TLS client", st)
	}
}
