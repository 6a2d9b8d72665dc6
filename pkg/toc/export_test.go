package toc

// SetPieceBytes sets the size of the pieces a TOC is read in, for a test,
// and returns a func restoring it.
func SetPieceBytes(n int64) (restore func()) {
	old := pieceBytes
	pieceBytes = n
	return func() { pieceBytes = old }
}
