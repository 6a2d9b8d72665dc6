// Command sg-layers prints one JSON record per layer of an image.
package main

import (
	"os"

	"github.com/stargz-get/stargz-get/internal/sglayers"
)

func main() { os.Exit(sglayers.Main()) }
