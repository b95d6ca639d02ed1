//go:build !linux

package runtime

// oDirect is the open flag that bypasses the page cache (0 = unsupported).
const oDirect = 0
