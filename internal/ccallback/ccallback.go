// Package ccallback states the rules a Go function must follow to be handed
// to C as a callback through purego.NewCallback on each platform the worker
// ships for, so that a test on one platform catches a callback that would
// panic or misread its arguments on another.
//
// The rules, from the two implementations purego.NewCallback uses:
//
//   - Windows x64 (purego calls syscall.NewCallback; Go's
//     runtime/syscall_windows.go compileCallback): exactly one result, of
//     pointer size and not a float ("expected function with one
//     uintptr-sized result"); no argument larger than a pointer; no float
//     argument ("float arguments not supported": the Windows x64 convention
//     passes floats in XMM registers, which the callback trampoline does not
//     read). A float parameter of the C function must be left out or taken
//     as the integer slot at its position, not declared as a float.
//   - System V x86-64 (Linux) and Apple arm64 (macOS), purego's own
//     compileCallback: at most one result, an integer, bool or pointer; no
//     string, slice, map, chan, func, interface or complex argument. Check
//     is stricter than purego here: it accepts only arguments passed in
//     registers (at most 6 integer and 8 float arguments on System V, 8 and
//     8 on arm64), which keeps clear of the stack-argument rules that differ
//     between the ABIs (Apple arm64 packs stack arguments by their natural
//     size).
//
// A C caller that expects no result ignores the result register, and a C
// callee may ignore trailing arguments under all three conventions (the
// caller owns the stack), so one signature of the form
// func(int32, *byte, uintptr) uintptr is valid everywhere.
package ccallback

import (
	"fmt"
	"reflect"
)

// Platforms are the GOOS values whose rules Check knows (each for the one
// architecture the worker ships there: windows/amd64, linux/amd64,
// darwin/arm64).
var Platforms = []string{"windows", "linux", "darwin"}

// Check returns nil when fn may be passed to purego.NewCallback on goos
// (one of Platforms), and an error naming the first broken rule otherwise.
func Check(fn any, goos string) error {
	t := reflect.TypeOf(fn)
	if t == nil || t.Kind() != reflect.Func {
		return fmt.Errorf("%v is not a function", t)
	}
	if t.IsVariadic() {
		return fmt.Errorf("%v: variadic functions cannot be C callbacks", t)
	}
	const ptrSize = 8
	ints, floats := 0, 0
	for i := range t.NumIn() {
		in := t.In(i)
		switch in.Kind() {
		case reflect.String, reflect.Slice, reflect.Map, reflect.Chan, reflect.Func,
			reflect.Interface, reflect.Complex64, reflect.Complex128, reflect.Array, reflect.Struct:
			return fmt.Errorf("%v: argument %d is a %s, which C cannot pass", t, i, in.Kind())
		case reflect.Float32, reflect.Float64:
			if goos == "windows" {
				return fmt.Errorf("%v: argument %d is a float, which a Windows x64 callback cannot take (leave it out or take its slot as a uintptr)", t, i)
			}
			floats++
		default:
			ints++
		}
		if in.Size() > ptrSize {
			return fmt.Errorf("%v: argument %d is larger than a pointer", t, i)
		}
	}
	switch goos {
	case "windows":
		if t.NumOut() != 1 || t.Out(0).Size() != ptrSize || isFloat(t.Out(0)) {
			return fmt.Errorf("%v: a Windows callback must have exactly one uintptr-sized, non-float result", t)
		}
		if ints+floats > 4 {
			// syscall.NewCallback reads the rest from the stack, which
			// works, but nothing of ours needs it; keep the rule simple.
			return fmt.Errorf("%v: more than 4 arguments", t)
		}
		return nil
	case "linux", "darwin":
		maxInts := 6
		if goos == "darwin" {
			maxInts = 8
		}
		if ints > maxInts || floats > 8 {
			return fmt.Errorf("%v: more arguments than %s passes in registers", t, goos)
		}
		switch {
		case t.NumOut() > 1:
			return fmt.Errorf("%v: a callback has at most one result", t)
		case t.NumOut() == 1:
			switch t.Out(0).Kind() {
			case reflect.Pointer, reflect.UnsafePointer, reflect.Bool, reflect.Uintptr,
				reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
				reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
			default:
				return fmt.Errorf("%v: purego cannot return a %s from a callback", t, t.Out(0).Kind())
			}
		}
		return nil
	}
	return fmt.Errorf("no callback rules for %q", goos)
}

func isFloat(t reflect.Type) bool {
	return t.Kind() == reflect.Float32 || t.Kind() == reflect.Float64
}
