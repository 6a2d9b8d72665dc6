package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
)

// modeFloor names W3's row that measures the link itself: the layer's
// bytes as range GETs on floorJobs connections at once, read and thrown
// away. No TOC is read and nothing is decoded or written, so no fetch of
// the whole layer can be faster on this machine and link; what sg-fetch
// takes beyond it is its own work (the TOC, planning, decoding, writing)
// and what that takes from the registry and proxy on the same cores.
const modeFloor = "link floor: 16 range GETs"

// floorJobs is sg-fetch's default -j.
const floorJobs = 16

// rangeFloor is the hidden subcommand "bench rangefloor URL SIZE JOBS":
// GET the blob at URL (plain HTTP, no auth, as the benchmark's registry
// serves it) as JOBS equal ranges in parallel, discarding the bytes.
func rangeFloor(ctx context.Context, args []string) error {
	if len(args) != 3 || !strings.HasPrefix(args[0], "http://") {
		return errors.New("usage: bench rangefloor http://HOST/v2/REPO/blobs/DIGEST SIZE JOBS")
	}
	size, err := strconv.ParseInt(args[1], 10, 64)
	if err != nil || size <= 0 {
		return fmt.Errorf("size %q: want a positive number of bytes", args[1])
	}
	jobs, err := strconv.Atoi(args[2])
	if err != nil || jobs <= 0 {
		return fmt.Errorf("jobs %q: want a positive number", args[2])
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: jobs, DisableCompression: true}}
	var wg sync.WaitGroup
	errs := make([]error, jobs)
	for i := range jobs {
		from, to := size*int64(i)/int64(jobs), size*int64(i+1)/int64(jobs)
		wg.Go(func() { errs[i] = getRange(ctx, client, args[0], from, to) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// getRange reads bytes [from, to) of url and checks that all came.
func getRange(ctx context.Context, client *http.Client, url string, from, to int64) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", from, to-1))
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusPartialContent {
		return fmt.Errorf("GET %s bytes %d-%d: %s", url, from, to-1, resp.Status)
	}
	n, err := io.Copy(io.Discard, resp.Body)
	if err == nil && n != to-from {
		err = fmt.Errorf("GET %s bytes %d-%d: %d bytes, want %d", url, from, to-1, n, to-from)
	}
	return err
}
