package cpufeat

import (
	"os"
	"strings"
	"testing"
)

// TestAgainstProcCPUInfo cross-checks the detection with the kernel's view
// where /proc/cpuinfo exists (Linux).
func TestAgainstProcCPUInfo(t *testing.T) {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		t.Skip("no /proc/cpuinfo")
	}
	var flags []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "flags") {
			flags = strings.Fields(l)
			break
		}
	}
	has := map[string]bool{}
	for _, f := range flags {
		has[f] = true
	}
	if len(flags) == 0 {
		t.Skip("no flags line")
	}
	if want := has["avx2"] && has["fma"]; AVX2FMA != want {
		t.Errorf("AVX2FMA = %v, /proc/cpuinfo says %v", AVX2FMA, want)
	}
	if want := has["avx512f"] && has["avx512bw"] && has["avx512dq"] && has["avx512vl"]; AVX512 != want {
		t.Errorf("AVX512 = %v, /proc/cpuinfo says %v", AVX512, want)
	}
	if Summary() == "" {
		t.Error("empty summary")
	}
}
