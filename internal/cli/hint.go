package cli

import "errors"

// HintOf returns the hint attached to err with WithHint, or "".
func HintOf(err error) string {
	var h *hinted
	if errors.As(err, &h) {
		return h.hint
	}
	return ""
}
