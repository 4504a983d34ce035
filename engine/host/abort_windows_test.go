package host_test

import "os"

// abortSelf ends the process as abort() does on Windows: exit code 3.
func abortSelf() { os.Exit(3) }
