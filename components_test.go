package main

import (
	"reflect"
	"testing"

	"icehub/config"
	icesignal "icehub/signal"
)

// The hub's own defaults (what its tests and library users start from) are the file's.
func TestHubDefaultsAreTheFileDefaults(t *testing.T) {
	got := hubSettings(config.Default(), &certs{})
	want := icesignal.DefaultSettings()
	got.AllowedOrigins, got.PublicOrigins, got.APIKeys, got.ProxyFrom = nil, nil, nil, nil // empty lists either way
	got.ICEURLs = nil                                                                      // derived from [turn], not a [signal] default
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("server.toml's [signal] defaults map to\n%+v\nsignal.DefaultSettings() is\n%+v", got, want)
	}
}
