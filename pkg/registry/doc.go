// Package registry is the small slice of the OCI distribution API the
// stargz-get tools need: parsing image references the way docker and crane
// do, resolving a reference to an image manifest for one platform (or to
// every platform's, see [Client.Images]), and reading byte ranges of layer
// blobs.
//
// Protocol work is go-containerregistry's: reference parsing (name), the
// Basic and Bearer challenge-and-token handshake (transport) and manifest
// types (v1). A [Client] keeps one authorized transport per repository, so
// the ping and token exchange happen once per repository and every ranged
// blob GET goes through the same authorized, connection-reusing transport;
// a token that expires (401) is renewed by that transport and the request
// sent again. Without credentials, requests do not wait for the handshake:
// they go out anonymously while it runs, and only those the registry
// refuses (401, 403, 404, 400) are sent again through its transport, so a
// registry that needs no token costs no round trip for it.
//
// What this package adds, for registries as they are in the wild:
//
//   - Credentials from where docker and podman keep them ([DefaultKeychain]:
//     docker's config.json with its credential helpers, then containers
//     auth.json), unless given explicitly ([WithCredential]).
//   - Retries below authentication ([RetryPolicy]): idempotent requests
//     are tried again, with exponential backoff and jitter, on connection
//     resets, timeouts, stalls ([ErrStalled], [WithIdleTimeout]), 408, 429
//     and 5xx, honouring Retry-After up to a cap; after the last try the
//     error names the URL (without query) and the last failure
//     ([ErrUnavailable]).
//   - Range reads that hold up: a body cut short is resumed from the first
//     byte not received; registries that ignore Range or answer 416 are
//     read through the whole blob; every 206's Content-Range is checked; a
//     redirect to blob storage is followed without the registry's
//     credentials and its target reused until it stops answering.
//   - Several ranges in one request ([Blob.ReadSpans]): multi-range
//     requests answered with multipart/byteranges, every part checked
//     against what was asked, and range-by-range reads for servers that
//     answer otherwise.
//   - TLS with private CAs ([WithCAFile]) and [ErrTLS] for untrusted
//     certificates.
//
// Nothing here logs or returns secrets: URLs are logged without query or
// user info ([RedactURL]), headers never.
package registry
