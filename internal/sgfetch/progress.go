package sgfetch

import (
	"io"
	"os"
	"strconv"
	"sync"

	"github.com/cheggaaa/pb/v3"
	"golang.org/x/term"

	"github.com/stargz-get/stargz-get/pkg/fetch"
)

const barTemplate = `{{counters . }} {{bar . }} {{percent . }} {{string . "files"}} {{speed . }} {{rtime . "ETA %s"}}`

// progressBar draws fetch progress on stderr with pb/v3.
type progressBar struct {
	mu  sync.Mutex
	bar *pb.ProgressBar
	w   io.Writer
}

// println writes a line to stderr over the bar, which is drawn again below
// it on its next refresh.
func (p *progressBar) println(line string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.bar != nil {
		line = "\r\x1b[K" + line
	}
	_, _ = io.WriteString(p.w, line+"\n")
}

// newProgressBar returns a bar for mode ("auto" draws only when stderr is a
// terminal), or nil.
func newProgressBar(mode string, stderr io.Writer) *progressBar {
	switch mode {
	case "never":
		return nil
	case "auto":
		f, ok := stderr.(*os.File)
		if !ok || !term.IsTerminal(int(f.Fd())) {
			return nil
		}
	}
	return &progressBar{w: stderr}
}

func (p *progressBar) update(pr fetch.Progress) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.bar == nil {
		p.bar = pb.New64(pr.BytesTotal)
		p.bar.SetTemplateString(barTemplate)
		p.bar.SetWriter(p.w)
		p.bar.Set(pb.Bytes, true)
		p.bar.Start()
	}
	p.bar.SetTotal(pr.BytesTotal)
	p.bar.SetCurrent(pr.BytesDone)
	p.bar.Set("files", formatFiles(pr.FilesDone, pr.FilesTotal))
}

func (p *progressBar) finish() {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.bar != nil {
		p.bar.Finish()
	}
}

func formatFiles(done, total int) string {
	return strconv.Itoa(done) + "/" + strconv.Itoa(total) + " files"
}
