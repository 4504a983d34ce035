// Command pkgtool does the packaging steps that need more than a shell:
// verifying and staging the llama.cpp runtime from packaging/runtimes.json,
// rewriting a DLL import, drawing icon sizes, and building the signed
// release feed. The Makefile's package-* and feed targets call it; it uses
// the standard library and the project's leaf package release, so it builds
// in seconds on every OS.
//
//	pkgtool verify  -manifest M -variant V -dir D
//	pkgtool stage   -manifest M -variant V -src D -out O
//	pkgtool icons   -src icon.png -out DIR [-name N] [-sizes 16,32,...]
//	pkgtool ico     -src icon.png -out file.ico [-sizes 16,32,48,256]
//	pkgtool imports FILE.dll...
//	pkgtool feed-keygen [-out FILE]
//	pkgtool feed    -base-url URL [-key FILE] [-dist dist] [-out dist/feed] ...
package main

import (
	"flag"
	"fmt"
	"image"
	"os"
	"strconv"
	"strings"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	var err error
	switch cmd, args := os.Args[1], os.Args[2:]; cmd {
	case "verify":
		err = cmdVerify(args)
	case "stage":
		err = cmdStage(args)
	case "icons":
		err = cmdIcons(args)
	case "ico":
		err = cmdICO(args)
	case "imports":
		err = cmdImports(args)
	case "feed-keygen":
		err = cmdFeedKeygen(args, os.Stdout)
	case "feed":
		err = cmdFeed(args, os.Stdout)
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "pkgtool:", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: pkgtool verify|stage|icons|ico|imports|feed-keygen|feed [flags] (see the package comment)")
	os.Exit(2)
}

func variantFlags(fs *flag.FlagSet) (manifest, variant *string) {
	return fs.String("manifest", "packaging/runtimes.json", "runtime manifest"),
		fs.String("variant", "", "runtime variant, e.g. linux-x64")
}

func cmdVerify(args []string) error {
	fs := flag.NewFlagSet("verify", flag.ExitOnError)
	manifest, variant := variantFlags(fs)
	dir := fs.String("dir", "", "folder holding the fetched runtime files")
	_ = fs.Parse(args)
	v, err := manifestVariant(*manifest, *variant)
	if err != nil {
		return err
	}
	if err := verify(v, *dir); err != nil {
		return err
	}
	fmt.Printf("runtime %s in %s: %d files match the manifest\n", v.Name, *dir, len(v.Files))
	return nil
}

func cmdStage(args []string) error {
	fs := flag.NewFlagSet("stage", flag.ExitOnError)
	manifest, variant := variantFlags(fs)
	src := fs.String("src", "", "folder holding the fetched runtime files")
	out := fs.String("out", "", "folder to create with the installed layout")
	_ = fs.Parse(args)
	if *src == "" || *out == "" {
		return fmt.Errorf("stage needs -src and -out")
	}
	v, err := manifestVariant(*manifest, *variant)
	if err != nil {
		return err
	}
	if err := stage(v, *src, *out); err != nil {
		return err
	}
	fmt.Printf("runtime %s staged in %s: %s\n", v.Name, *out, strings.Join(v.installedNames(), " "))
	return nil
}

func manifestVariant(path, name string) (Variant, error) {
	if name == "" {
		return Variant{}, fmt.Errorf("-variant is required")
	}
	vs, err := loadManifest(path)
	if err != nil {
		return Variant{}, err
	}
	return findVariant(vs, name)
}

func parseSizes(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 || n > 1024 {
			return nil, fmt.Errorf("bad icon size %q", f)
		}
		out = append(out, n)
	}
	return out, nil
}

// iconInputs reads the icon commands' -src PNG and -sizes list, sizes
// first so that a typo is reported before the image is decoded.
func iconInputs(src, sizes string) (*image.NRGBA, []int, error) {
	ss, err := parseSizes(sizes)
	if err != nil {
		return nil, nil, err
	}
	img, err := loadPNG(src)
	if err != nil {
		return nil, nil, err
	}
	return img, ss, nil
}

func cmdIcons(args []string) error {
	fs := flag.NewFlagSet("icons", flag.ExitOnError)
	src := fs.String("src", "assets/icon.png", "square source PNG")
	out := fs.String("out", "", "hicolor theme folder to write into")
	name := fs.String("name", "studio-worker", "icon name")
	sizes := fs.String("sizes", "16,32,48,64,128,256,512", "sizes in pixels")
	_ = fs.Parse(args)
	img, ss, err := iconInputs(*src, *sizes)
	if err != nil {
		return err
	}
	return writeHicolor(img, *out, *name, ss)
}

func cmdICO(args []string) error {
	fs := flag.NewFlagSet("ico", flag.ExitOnError)
	src := fs.String("src", "assets/icon.png", "square source PNG")
	out := fs.String("out", "", ".ico file to write")
	sizes := fs.String("sizes", "16,24,32,48,64,256", "sizes in pixels (at most 256)")
	_ = fs.Parse(args)
	img, ss, err := iconInputs(*src, *sizes)
	if err != nil {
		return err
	}
	b, err := encodeICO(img, ss)
	if err != nil {
		return err
	}
	return os.WriteFile(*out, b, 0o644)
}

func cmdImports(args []string) error {
	for _, p := range args {
		libs, err := peImports(p)
		if err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		fmt.Printf("%s: %s\n", p, strings.Join(libs, " "))
	}
	return nil
}
