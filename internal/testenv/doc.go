// Package testenv provides the real parts that stargz-get's tests and demo
// run against: the CNCF distribution registry (built once from the Go module
// proxy at a pinned version and started on a loopback port with temporary
// storage, optionally behind htpasswd Basic auth), and fixture images whose
// layers are built with the estargz package from real files of the Go
// toolchain's own tree.
//
// Every fixture layer carries its ground truth — the list of tar entries it
// was built from, with content digests — so a test can check what a tool
// wrote to disk with CheckTree.
//
// The package does not import "testing": it is shared by Go tests,
// testscript setups and the demo program, so functions return errors and
// the things they start have Close methods.
package testenv
