package main

import (
	"bytes"
	"debug/elf"
	"debug/macho"
	"debug/pe"
	"encoding/binary"
	"fmt"
	"os"
)

// exportedSymbols lists the symbols a shared library defines for others:
// a PE DLL's export names, an ELF library's defined dynamic symbols, or a
// Mach-O dylib's external defined symbols (without the leading underscore).
func exportedSymbols(path string) ([]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	switch {
	case bytes.HasPrefix(data, []byte("MZ")):
		return peExports(data)
	case bytes.HasPrefix(data, []byte("\x7fELF")):
		f, err := elf.NewFile(bytes.NewReader(data))
		if err != nil {
			return nil, err
		}
		syms, err := f.DynamicSymbols()
		if err != nil {
			return nil, err
		}
		var out []string
		for _, s := range syms {
			if s.Section != elf.SHN_UNDEF {
				out = append(out, s.Name)
			}
		}
		return out, nil
	default:
		f, err := macho.NewFile(bytes.NewReader(data))
		if err != nil {
			return nil, fmt.Errorf("%s: not a PE, ELF or Mach-O library", path)
		}
		if f.Symtab == nil {
			return nil, nil
		}
		const nExt, nTypeMask, nSect = 0x01, 0x0e, 0x0e
		var out []string
		for _, s := range f.Symtab.Syms {
			if s.Type&nExt != 0 && s.Type&nTypeMask == nSect && len(s.Name) > 1 {
				out = append(out, s.Name[1:])
			}
		}
		return out, nil
	}
}

// peExports reads the name table of a PE export directory.
func peExports(data []byte) ([]string, error) {
	f, err := pe.NewFile(bytes.NewReader(data))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var dir pe.DataDirectory
	switch oh := f.OptionalHeader.(type) {
	case *pe.OptionalHeader64:
		dir = oh.DataDirectory[0]
	case *pe.OptionalHeader32:
		dir = oh.DataDirectory[0]
	default:
		return nil, fmt.Errorf("not a PE image with an optional header")
	}
	if dir.VirtualAddress == 0 {
		return nil, nil
	}
	off := func(rva uint32) (int, error) {
		if o, ok := rvaToOffset(f, rva, len(data)); ok {
			return o, nil
		}
		return 0, fmt.Errorf("export table points outside the file")
	}
	ed, err := off(dir.VirtualAddress)
	if err != nil || ed+40 > len(data) {
		return nil, fmt.Errorf("bad export directory")
	}
	le := binary.LittleEndian
	n := int(le.Uint32(data[ed+24:]))
	names, err := off(le.Uint32(data[ed+32:]))
	if err != nil || names+4*n > len(data) {
		return nil, fmt.Errorf("bad export name table")
	}
	out := make([]string, 0, n)
	for i := 0; i < n; i++ {
		o, err := off(le.Uint32(data[names+4*i:]))
		if err != nil {
			return nil, err
		}
		end := bytes.IndexByte(data[o:], 0)
		if end < 0 {
			return nil, fmt.Errorf("unterminated export name")
		}
		out = append(out, string(data[o:o+end]))
	}
	return out, nil
}

func rvaToOffset(f *pe.File, rva uint32, size int) (int, bool) {
	for _, s := range f.Sections {
		vs := s.VirtualSize
		if s.Size > vs {
			vs = s.Size
		}
		if rva >= s.VirtualAddress && rva < s.VirtualAddress+vs {
			o := int(rva - s.VirtualAddress + s.Offset)
			return o, o < size
		}
	}
	return 0, false
}
