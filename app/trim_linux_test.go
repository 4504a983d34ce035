package app

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Only the read-only, private mappings of a file are chosen: not the
// anonymous, writable, shared, no-access or deleted ones, nor the
// kernel's own; those with written pages (Anonymous or Swap above 0 kB)
// are marked, so that MADV_DONTNEED never replaces those pages.
func TestCodeMappingsChoosesReadOnlyFileMappings(t *testing.T) {
	const smaps = `00400000-00452000 r-xp 00000000 fd:01 1311 /opt/studio worker/bin/studio-worker
Size:                328 kB
Rss:                 300 kB
Anonymous:             0 kB
Swap:                  0 kB
VmFlags: rd ex mr mw me
00651000-00652000 r--p 00051000 fd:01 1311 /opt/studio worker/bin/studio-worker
Rss:                   4 kB
Anonymous:             4 kB
Swap:                  0 kB
00652000-00653000 rw-p 00052000 fd:01 1311 /opt/studio worker/bin/studio-worker
Anonymous:             4 kB
01bb5000-01bd6000 rw-p 00000000 00:00 0                                  [heap]
Anonymous:           132 kB
c000000000-c004000000 rw-p 00000000 00:00 0
Anonymous:          4096 kB
7f1c3a000000-7f1c3c5a1000 r-xp 00000000 fd:01 2222                     /usr/lib/x86_64-linux-gnu/libLLVM.so.19.1
Rss:               35000 kB
Anonymous:             0 kB
Swap:                  0 kB
7f1c3c5a1000-7f1c3c7a0000 ---p 025a1000 fd:01 2222                     /usr/lib/x86_64-linux-gnu/libLLVM.so.19.1
Anonymous:             0 kB
7f1c3c7a0000-7f1c3c900000 r--p 025a0000 fd:01 2222                     /usr/lib/x86_64-linux-gnu/libLLVM.so.19.1
Anonymous:             0 kB
Swap:                 12 kB
7f1c40000000-7f1c40010000 r--s 00000000 00:05 9                        /dev/shm/wayland-shared
7f1c41000000-7f1c41010000 r-xp 00000000 fd:01 3333                     /tmp/libgone.so (deleted)
7f1c42000000-7f1c42001000 r--p 00000000 00:00 0                        [vvar]
7f1c42001000-7f1c42003000 r-xp 00000000 00:00 0                        [vdso]
7ffd1d2a0000-7ffd1d2c1000 rw-p 00000000 00:00 0                        [stack]
ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                [vsyscall]
`
	got, err := codeMappings(strings.NewReader(smaps))
	if err != nil {
		t.Fatal(err)
	}
	want := []mapping{
		{0x400000, 0x452000, "/opt/studio worker/bin/studio-worker", false},
		{0x651000, 0x652000, "/opt/studio worker/bin/studio-worker", true},
		{0x7f1c3a000000, 0x7f1c3c5a1000, "/usr/lib/x86_64-linux-gnu/libLLVM.so.19.1", false},
		{0x7f1c3c7a0000, 0x7f1c3c900000, "/usr/lib/x86_64-linux-gnu/libLLVM.so.19.1", true},
	}
	if len(got) != len(want) {
		t.Fatalf("chose %d mappings, want %d: %+v", len(got), len(want), got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("mapping %d: %+v, want %+v", i, got[i], want[i])
		}
	}

	for _, bad := range []string{
		"zz-00452000 r-xp 00000000 fd:01 1311 /bin/x\n",
		"00452000-00400000 r-xp 00000000 fd:01 1311 /bin/x\n",
		"00400000 r-xp 00000000 fd:01 1311 /bin/x\n",
	} {
		if _, err := codeMappings(strings.NewReader(bad)); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

// trimCode on this test process's own mappings of a file: the resident
// pages of a read-only one leave the resident set and read back the same,
// and a page written before its mapping was made read-only (as the dynamic
// linker does with relocations) keeps what was written.
func TestTrimCodeGivesBackReadOnlyFilePages(t *testing.T) {
	const size = 4 << 20
	path := filepath.Join(t.TempDir(), "code.bin")
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(i / 4096)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	// Written back to the disk: the kernel reclaims no dirty page.
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	code, err := unix.Mmap(int(f.Fd()), 0, size, unix.PROT_READ, unix.MAP_PRIVATE)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(code)
	relro, err := unix.Mmap(int(f.Fd()), 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(relro)
	f.Close()
	var sum int
	for i := 0; i < size; i += 4096 {
		sum += int(code[i]) + int(relro[i])
	}
	relro[5*4096] = 0xAA
	if err := unix.Mprotect(relro, unix.PROT_READ); err != nil {
		t.Fatal(err)
	}
	codeStart := uintptr(unsafe.Pointer(&code[0]))
	relroStart := uintptr(unsafe.Pointer(&relro[0]))
	if got := mappingRSS(t, codeStart); got != size {
		t.Fatalf("%d bytes of the read-only mapping are resident before trimming, want %d", got, size)
	}

	n, err := trimCode()
	if errors.Is(err, unix.EINVAL) {
		t.Skipf("the kernel has no madvise(MADV_PAGEOUT) (Linux 5.4 and later): %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	if n < 2*size {
		t.Fatalf("trimCode asked about %d bytes, fewer than the test's own mappings", n)
	}
	codeAfter, relroAfter := mappingRSS(t, codeStart), mappingRSS(t, relroStart)
	t.Logf("resident after trimming: read-only mapping %d KiB of %d, written one %d KiB", codeAfter>>10, size>>10, relroAfter>>10)
	if codeAfter != 0 {
		t.Errorf("%d bytes of the read-only mapping are still resident", codeAfter)
	}
	if relro[5*4096] != 0xAA {
		t.Errorf("the written byte reads %#x after trimming, want 0xaa", relro[5*4096])
	}
	var after int
	for i := 0; i < size; i += 4096 {
		after += int(code[i]) + int(relro[i])
	}
	if after != sum-5+0xAA {
		t.Errorf("the mappings read back %d, want %d", after, sum-5+0xAA)
	}
}

// mappingRSS is the Rss, in bytes, of the mapping starting at start in
// /proc/self/smaps.
func mappingRSS(t *testing.T, start uintptr) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		t.Skipf("no /proc/self/smaps: %v", err)
	}
	head := strconv.FormatUint(uint64(start), 16) + "-"
	in := false
	for _, line := range strings.Split(string(b), "\n") {
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		if !strings.HasSuffix(fields[0], ":") {
			in = strings.HasPrefix(line, head)
			continue
		}
		if in && fields[0] == "Rss:" && len(fields) >= 2 {
			kb, err := strconv.ParseInt(fields[1], 10, 64)
			if err != nil {
				t.Fatalf("smaps: %q: %v", line, err)
			}
			return kb << 10
		}
	}
	t.Fatalf("no mapping at %#x in /proc/self/smaps", start)
	return 0
}
