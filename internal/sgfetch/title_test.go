package sgfetch

import (
	"strings"
	"testing"
)

func TestCheckTitle(t *testing.T) {
	for _, tc := range []struct {
		title, want, err string
	}{
		{"tool", "tool", ""},
		{"docs/guide.md", "docs/guide.md", ""},
		{"./a//b/", "a/b", ""},
		{"a..b", "a..b", ""},
		{strings.Repeat("n", 255), strings.Repeat("n", 255), ""},
		{"", "", "empty"},
		{"../x", "", "climbs out"},
		{"a/../../b", "", "climbs out"},
		{"a/../b", "", "climbs out"},
		{"/etc/passwd", "", "absolute"},
		{"a\x00b", "", "NUL"},
		{"\xff", "", "UTF-8"},
		{strings.Repeat("n", 256), "", "256 bytes long"},
		{".", "", "output directory itself"},
	} {
		got, err := checkTitle(tc.title)
		switch {
		case tc.err == "" && (err != nil || got != tc.want):
			t.Errorf("checkTitle(%q) = %q, %v; want %q", tc.title, got, err, tc.want)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("checkTitle(%q) = %q, %v; want an error containing %q", tc.title, got, err, tc.err)
		}
	}
}
