// Command sg-ls prints one JSON record per file in an eStargz layer's TOC.
package main

import (
	"os"

	"github.com/stargz-get/stargz-get/internal/sgls"
)

func main() { os.Exit(sgls.Main()) }
