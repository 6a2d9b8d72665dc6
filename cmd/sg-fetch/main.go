// Command sg-fetch downloads files out of eStargz layers with HTTP Range
// requests.
package main

import (
	"os"

	"github.com/stargz-get/stargz-get/internal/sgfetch"
)

func main() { os.Exit(sgfetch.Main()) }
