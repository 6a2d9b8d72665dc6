//go:build cgo && (linux || darwin || freebsd)

package libdeflate

/*
#cgo linux LDFLAGS: -ldl
#include <dlfcn.h>
#include <stddef.h>
#include <stdlib.h>

// The three functions used, as libdeflate.h (stable since 1.0) declares
// them; looked up with dlsym, so that no header is needed to build.
typedef void *(*alloc_fn)(void);
typedef void (*free_fn)(void *);
typedef int (*gzip_fn)(void *, const void *, size_t, void *, size_t, size_t *, size_t *);

static alloc_fn sg_alloc;
static free_fn sg_free;
static gzip_fn sg_gzip;

static const char *sg_open(void) {
	static const char *names[] = {"libdeflate.so.0", "libdeflate.0.dylib", "/opt/homebrew/lib/libdeflate.0.dylib", "/usr/local/lib/libdeflate.0.dylib", NULL};
	void *h = NULL;
	for (int i = 0; names[i] != NULL && h == NULL; i++) {
		h = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
	}
	if (h == NULL) {
		return "libdeflate.so.0 not found";
	}
	sg_alloc = (alloc_fn)dlsym(h, "libdeflate_alloc_decompressor");
	sg_free = (free_fn)dlsym(h, "libdeflate_free_decompressor");
	sg_gzip = (gzip_fn)dlsym(h, "libdeflate_gzip_decompress_ex");
	if (sg_alloc == NULL || sg_free == NULL || sg_gzip == NULL) {
		return "libdeflate lacks libdeflate_gzip_decompress_ex";
	}
	return NULL;
}

static void *sg_alloc_decompressor(void) { return sg_alloc(); }
static void sg_free_decompressor(void *d) { sg_free(d); }

static int sg_gunzip(void *d, const void *in, size_t in_n, void *out, size_t out_n, size_t *in_used, size_t *out_used) {
	return sg_gzip(d, in, in_n, out, out_n, in_used, out_used);
}
*/
import "C"

import (
	"errors"
	"unsafe"
)

type decompressor unsafe.Pointer

func open() error {
	if msg := C.sg_open(); msg != nil {
		return errors.New(C.GoString(msg))
	}
	return nil
}

func alloc() (decompressor, error) {
	d := C.sg_alloc_decompressor()
	if d == nil {
		return nil, errors.New("libdeflate could not allocate a decompressor")
	}
	return decompressor(d), nil
}

func free(d decompressor) {
	if d != nil {
		C.sg_free_decompressor(unsafe.Pointer(d))
	}
}

// libdeflate_result values.
const (
	resultSuccess           = 0
	resultBadData           = 1
	resultInsufficientSpace = 3
)

func gunzip(d decompressor, dst, src []byte) (int, int, error) {
	var in, out C.size_t
	var outPtr unsafe.Pointer
	if len(dst) > 0 {
		outPtr = unsafe.Pointer(&dst[0])
	}
	// dst and src hold no Go pointers, and libdeflate keeps neither.
	r := C.sg_gunzip(unsafe.Pointer(d), unsafe.Pointer(&src[0]), C.size_t(len(src)), outPtr, C.size_t(len(dst)), &in, &out)
	switch r {
	case resultSuccess:
		return int(out), int(in), nil
	case resultInsufficientSpace:
		return 0, 0, ErrInsufficientSpace
	default:
		return 0, 0, ErrBadData
	}
}
