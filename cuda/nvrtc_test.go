package cuda

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// TestCompileOnly compiles the embedded kernels with NVRTC alone (no driver,
// no GPU) for sm_90 (sm_90a with NVRTC 12 or later), when FMOE_NVRTC names a libnvrtc (for example one
// unpacked from a distribution package), and logs ptxas's register and spill
// report per kernel. It catches CUDA C errors before a GPU run.
func TestCompileOnly(t *testing.T) {
	lib := os.Getenv("FMOE_NVRTC")
	if lib == "" {
		t.Skip("FMOE_NVRTC (path of a libnvrtc) not set")
	}
	l := &libs{}
	if err := bind([]string{lib}, l.nvrtc.table()); err != nil {
		t.Fatal(err)
	}
	d := &device{l: l, ccMajor: 9, ccMinor: 0}
	d.sm90a = d.canSM90A() // NVRTC 12+: sm_90a, with the warpgroup MMA kernels
	t.Logf("building for %s", d.arch())
	log, bin, err := d.compileLog(kernelSource(), "-Xptxas=-v")
	if err != nil {
		t.Fatal(err)
	}
	if len(bin) == 0 {
		t.Fatal("empty cubin")
	}
	// One line per kernel: name, registers, spills.
	fn := regexp.MustCompile(`Compiling entry function '(\w+)'`)
	var cur string
	for _, line := range strings.Split(log, "\n") {
		if m := fn.FindStringSubmatch(line); m != nil {
			cur = m[1]
			continue
		}
		if strings.Contains(line, "warning") {
			t.Logf("WARNING %s: %s", cur, strings.TrimSpace(line))
			continue
		}
		if strings.Contains(line, "registers") || strings.Contains(line, "spill") {
			if strings.Contains(line, "spill") && !strings.Contains(line, "0 bytes spill stores, 0 bytes spill loads") {
				t.Logf("SPILL %s: %s", cur, strings.TrimSpace(line))
			} else if testing.Verbose() {
				t.Logf("%s: %s", cur, strings.TrimSpace(line))
			}
		}
	}
	for _, name := range kernelNames() {
		if !strings.Contains(log, "'"+name+"'") && testing.Verbose() {
			t.Logf("no ptxas report for %s", name)
		}
	}
}

// TestWriteCache: the kernel cache file appears whole under its name (the
// directory created), is replaced on a second write, and no temporary file
// is left behind.
func TestWriteCache(t *testing.T) {
	dir := t.TempDir() + "/sub/cuda"
	for _, data := range []string{"first cubin", "second"} {
		if err := writeCache(dir, "k.cubin", []byte(data)); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(dir + "/k.cubin")
		if err != nil || string(got) != data {
			t.Fatalf("read back %q, %v; want %q", got, err, data)
		}
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 1 {
		t.Fatalf("cache directory holds %d entries, want 1: %v", len(ents), ents)
	}
}

// TestQMXNamesBuilt: every qmx, qmxe, qmxd and qmxs kernel the backend looks up
// (qmxKernelNames, loaded by name at start) is instantiated in kernels_mx.cu,
// and every instantiation is looked up.
func TestQMXNamesBuilt(t *testing.T) {
	built := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^QMX(M?)\((\d+), (\d+), (\d+), (\d+)\)$`).FindAllStringSubmatch(kernelsMX, -1) {
		if m[1] == "M" {
			for _, pf := range []string{"qmxe", "qmxd", "qmxs"} {
				built[pf+m[2]+"_"+m[3]+"_"+m[4]+"_"+m[5]] = true
			}
		} else {
			built["qmx"+m[2]+"_"+m[3]+"_"+m[4]+"_"+m[5]+"p"] = true
			built["qmx"+m[2]+"_"+m[3]+"_"+m[4]+"_"+m[5]+"n"] = true
		}
	}
	for _, m := range regexp.MustCompile(`(?m)^QMXI\((\d+), (\d+)\)$`).FindAllStringSubmatch(kernelsMXI, -1) {
		for _, v := range []string{"p", "n", "cp", "cn"} {
			built["qmxi4_"+m[1]+"_"+m[2]+v] = true
		}
	}
	names := qmxKernelNames()
	for _, n := range names {
		if !built[n] {
			t.Errorf("kernel %s is looked up but not instantiated", n)
		}
		delete(built, n)
	}
	for n := range built {
		t.Errorf("kernel %s is instantiated but never looked up", n)
	}
	if len(names) < 40 {
		t.Fatalf("only %d qmx kernel names", len(names))
	}
}
