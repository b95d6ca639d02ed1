//go:build linux

package runtime

import "syscall"

// oDirect is the open flag that bypasses the page cache (0 = unsupported).
const oDirect = syscall.O_DIRECT
