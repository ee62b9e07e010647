package member

import (
	"strings"
	"testing"
)

func TestSanitizeHost(t *testing.T) {
	long := strings.Repeat("h", 100)
	tests := []struct {
		host, want string
	}{
		{"db-1.example.com", "db-1.example.com"},
		{"my_host", "my_host"},
		{"host with spaces", "host-with-spaces"},
		{"ünï", "--n--"}, // each byte of ü and ï becomes a -
		{"", "worker"},
		{long, long[:MaxNameLen-1-suffixLen]},
	}
	for _, tt := range tests {
		got := sanitizeHost(tt.host)
		if got != tt.want {
			t.Errorf("sanitizeHost(%q) = %q; want %q", tt.host, got, tt.want)
		}
		if err := CheckName(got + "-" + randomSuffix()); err != nil {
			t.Errorf("sanitizeHost(%q) + suffix: %v", tt.host, err)
		}
	}
}
