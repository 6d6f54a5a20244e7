//go:build !unix

package config

// writable cannot be checked without writing here; start-up reports what fails.
func writable(string, bool) error { return nil }
