// Package registry is the small slice of the OCI distribution API the
// stargz-get tools need: parsing image references the way docker and crane
// do, resolving a reference to an image manifest for one platform, and
// reading byte ranges of layer blobs.
//
// Protocol work is go-containerregistry's: reference parsing (name), the
// docker config and credential-helper keychain (authn), the Basic and
// Bearer challenge-and-token handshake (transport) and manifest types (v1).
// A [Client] keeps one authorized transport per repository, so the ping and
// token exchange happen once per repository and every ranged blob GET goes
// through the same authorized, connection-reusing transport.
package registry
