package main

import (
	"bytes"
	"debug/pe"
	"encoding/binary"
	"fmt"
	"os"
	"strings"
)

// patchImport rewrites, in place, the name of an imported DLL in a PE
// file's import table (and delay-import table): every import of from
// becomes an import of to. The new name is written over the old one and
// padded with NULs, so no offset in the file moves; to may not be longer
// than from.
//
// Why: yzma opens llama.dll and ggml.dll by those names, while the npm
// builds are named llama.v0.4.0.dll and ggml.v0.4.0.dll and llama imports
// ggml by its versioned name. Windows keys loaded modules by file name, so
// shipping ggml.dll next to ggml.v0.4.0.dll would load two ggml copies
// with two backend registries: the backends yzma loads would land in one,
// and llama would look in the other. Renaming ggml and pointing llama's
// import at the new name leaves one ggml in the process.
func patchImport(path, from, to string) error {
	if len(to) > len(from) {
		return fmt.Errorf("cannot rewrite import %s to the longer name %s", from, to)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	offs, err := importNameOffsets(data)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	n := 0
	for _, off := range offs {
		end := bytes.IndexByte(data[off:], 0)
		if end < 0 {
			return fmt.Errorf("%s: unterminated import name", path)
		}
		if !strings.EqualFold(string(data[off:off+end]), from) {
			continue
		}
		copy(data[off:off+end], make([]byte, end))
		copy(data[off:], to)
		n++
	}
	if n == 0 {
		return fmt.Errorf("%s does not import %s (was it patched already, or is it another build?)", path, from)
	}
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	return os.WriteFile(path, data, st.Mode().Perm())
}

// importNameOffsets returns the file offsets of every DLL name in the
// import and delay-import directories.
func importNameOffsets(data []byte) ([]int, error) {
	f, err := pe.NewFile(bytes.NewReader(data))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var dirs []pe.DataDirectory
	switch oh := f.OptionalHeader.(type) {
	case *pe.OptionalHeader64:
		dirs = oh.DataDirectory[:oh.NumberOfRvaAndSizes]
	case *pe.OptionalHeader32:
		dirs = oh.DataDirectory[:oh.NumberOfRvaAndSizes]
	default:
		return nil, fmt.Errorf("not a PE image with an optional header")
	}
	var offs []int
	walk := func(dir pe.DataDirectory, entrySize, nameAt int) error {
		if dir.VirtualAddress == 0 {
			return nil
		}
		base, ok := rvaToOffset(f, dir.VirtualAddress, len(data))
		if !ok {
			return fmt.Errorf("import directory outside the file")
		}
		for e := base; e+entrySize <= len(data); e += entrySize {
			entry := data[e : e+entrySize]
			if bytes.Equal(entry, make([]byte, entrySize)) {
				return nil
			}
			nameRVA := binary.LittleEndian.Uint32(entry[nameAt:])
			off, ok := rvaToOffset(f, nameRVA, len(data))
			if !ok {
				return fmt.Errorf("import name outside the file")
			}
			offs = append(offs, off)
		}
		return fmt.Errorf("import directory runs off the end of the file")
	}
	const importDir, delayImportDir = 1, 13
	// IMAGE_IMPORT_DESCRIPTOR: 20 bytes, Name at 12.
	if len(dirs) > importDir {
		if err := walk(dirs[importDir], 20, 12); err != nil {
			return nil, err
		}
	}
	// IMAGE_DELAYLOAD_DESCRIPTOR: 32 bytes, DllNameRVA at 4.
	if len(dirs) > delayImportDir {
		if err := walk(dirs[delayImportDir], 32, 4); err != nil {
			return nil, err
		}
	}
	return offs, nil
}
