package fetch

import (
	"fmt"
	"strings"
)

// longComponent says which part of name (clean, relative) is longer than
// max bytes, or returns "". Such an entry cannot be written, so it is
// refused before anything is downloaded for it.
func longComponent(name string, max int) string {
	for rest := name; rest != ""; {
		var part string
		part, rest, _ = strings.Cut(rest, "/")
		if len(part) > max {
			return fmt.Sprintf("name has a part of %d bytes (%.16s...), longer than the %d bytes a file name may have on the output directory's filesystem", len(part), part, max)
		}
	}
	return ""
}
