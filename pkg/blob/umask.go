package blob

import (
	"bufio"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"sync"
)

// defaultUmask is assumed where the process umask cannot be read.
const defaultUmask = 0o022

var umask = sync.OnceValue(func() fs.FileMode {
	// Linux (4.7 and later) shows the umask in /proc/self/status; reading
	// it there avoids umask(2), which can only read it by changing it.
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return defaultUmask
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "Umask:"); ok {
			if m, err := strconv.ParseUint(strings.TrimSpace(v), 8, 32); err == nil {
				return fs.FileMode(m) & 0o777
			}
		}
	}
	return defaultUmask
})
