package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
)

// caTLS returns a client TLS configuration trusting the CAs in a PEM file.
func caTLS(path string) (*tls.Config, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("CA file %s: no PEM certificate", path)
	}
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
}

// influxTLS is the TLS configuration for InfluxDB (nil: defaults).
func influxTLS(sec securityConfig) (*tls.Config, error) {
	if sec.InfluxCA == "" {
		return nil, nil
	}
	t, err := caTLS(sec.InfluxCA)
	if err != nil {
		return nil, fmt.Errorf("influx: %w", err)
	}
	return t, nil
}

// mqttTLS is the TLS configuration for the broker (nil: defaults).
func mqttTLS(sec securityConfig) (*tls.Config, error) {
	if sec.MQTTCA == "" {
		return nil, nil
	}
	t, err := caTLS(sec.MQTTCA)
	if err != nil {
		return nil, fmt.Errorf("mqtt: %w", err)
	}
	return t, nil
}
