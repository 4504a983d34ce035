// Package clocale keeps a "C.UTF-8" locale (the default of containers and
// many servers) from filling stderr with Fyne's "Error parsing user locale C"
// at start-up, which would break the one-line errors of the CLI.
//
// Fyne reads the locale in its lang package's init, before main runs, so
// this must run earlier still: main imports it first, it imports nothing but
// syscall, and Go initialises a ready package with a smaller import path
// first, so it runs before fyne.io/fyne/v2/lang (which waits for
// github.com/nicksnyder/go-i18n). TestNoLocaleNoise in package main guards
// this against a change in that order.
package clocale

import "syscall"

func init() { Apply() }

// Apply sets LANGUAGE=en when the effective locale is a "C.<codeset>" one
// and LANGUAGE is unset. LANGUAGE only picks message translations, and the
// C library ignores it under a C locale, so nothing else changes.
func Apply() {
	if v, _ := syscall.Getenv("LANGUAGE"); v != "" {
		return
	}
	loc := ""
	for _, k := range []string{"LC_ALL", "LC_MESSAGES", "LANG"} {
		if v, _ := syscall.Getenv(k); v != "" {
			loc = v
			break
		}
	}
	if len(loc) > 2 && loc[:2] == "C." {
		syscall.Setenv("LANGUAGE", "en")
	}
}
