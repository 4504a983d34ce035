#!/usr/bin/env bash
# packaging/macos/build.sh <studio-worker binary> <version>   (macOS only)
#
# Builds dist/Studio Worker.app and dist/StudioWorker-<version>-macos-arm64.dmg
# with the Metal llama.cpp runtime (@node-llama-cpp/mac-arm64-metal):
#
#   Studio Worker.app/Contents/
#     Info.plist
#     MacOS/studio-worker
#     MacOS/lib -> ../Frameworks/llama     (the app looks in lib/ beside itself)
#     Frameworks/llama/libllama.dylib -> libllama.metal.v0.4.0.dylib, ...
#     Resources/studio-worker.icns
#
# The bundle is signed ad hoc (codesign -s -), which Apple Silicon needs to
# run it at all; it is not notarised, so a downloaded copy opens the first
# time with right-click > Open. This script was written on Linux and has not
# been run on a Mac by its author.
set -euo pipefail

root="$(cd "$(dirname "$0")/../.." && pwd)"
bin="${1:?usage: build.sh <binary> <version>}"
version="${2:?usage: build.sh <binary> <version>}"
dist="$root/dist"
work="$dist/.work/macos"
pkgtool="${PKGTOOL:-$dist/.work/pkgtool}"
variant=mac-arm64-metal

die() { echo "package-macos: $*" >&2; exit 1; }
[ "$(uname -s)" = Darwin ] || die "needs macOS (hdiutil, iconutil, codesign)"
for t in hdiutil iconutil codesign npm; do command -v "$t" >/dev/null || die "$t not found (Xcode command-line tools)"; done
file -b "$bin" | grep -q 'Mach-O 64-bit executable arm64' || die "$bin is not an arm64 macOS program: $(file -b "$bin")"

rm -rf "$work"; mkdir -p "$work/npm"
app="$work/Studio Worker.app"
mkdir -p "$app/Contents/MacOS" "$app/Contents/Frameworks" "$app/Contents/Resources"
# npm pack here rather than fetch-runtime.sh, which needs GNU sha256sum;
# pkgtool checks every file against the manifest's sha256 either way.
pkg="$(sed -n '/"variant": "'"$variant"'"/,/"files"/p' "$root/packaging/runtimes.json" | sed -n 's/.*"npm": "\(.*\)",/\1/p')"
ver="$(sed -n '/"variant": "'"$variant"'"/,/"files"/p' "$root/packaging/runtimes.json" | sed -n 's/.*"version": "\(.*\)",/\1/p')"
[ -n "$pkg" ] && [ -n "$ver" ] || die "no $variant entry in runtimes.json"
(cd "$work/npm" && npm pack --silent "$pkg@$ver" >/dev/null) || die "npm pack $pkg@$ver failed"
tar -xzf "$work/npm"/*.tgz -C "$work/npm"
"$pkgtool" stage -manifest "$root/packaging/runtimes.json" -variant "$variant" \
  -src "$work/npm/package/bins/$variant" -out "$app/Contents/Frameworks/llama" >/dev/null
ln -s ../Frameworks/llama "$app/Contents/MacOS/lib"
install -m 0755 "$bin" "$app/Contents/MacOS/studio-worker"

# Icon: the hicolor sizes from pkgtool, renamed into an .iconset.
"$pkgtool" icons -src "$root/assets/icon.png" -out "$work/icons" -sizes 16,32,64,128,256,512
set_dir="$work/studio-worker.iconset"; mkdir -p "$set_dir"
for s in 16 32 128 256; do
  cp "$work/icons/${s}x${s}/apps/studio-worker.png" "$set_dir/icon_${s}x${s}.png"
  d=$((s * 2)); cp "$work/icons/${d}x${d}/apps/studio-worker.png" "$set_dir/icon_${s}x${s}@2x.png"
done
cp "$work/icons/512x512/apps/studio-worker.png" "$set_dir/icon_512x512.png"
iconutil -c icns -o "$app/Contents/Resources/studio-worker.icns" "$set_dir"

cat >"$app/Contents/Info.plist" <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0">
<dict>
	<key>CFBundleName</key><string>Studio Worker</string>
	<key>CFBundleDisplayName</key><string>Studio Worker</string>
	<key>CFBundleIdentifier</key><string>gg.minis.studioworker</string>
	<key>CFBundleExecutable</key><string>studio-worker</string>
	<key>CFBundleIconFile</key><string>studio-worker.icns</string>
	<key>CFBundlePackageType</key><string>APPL</string>
	<key>CFBundleShortVersionString</key><string>$version</string>
	<key>CFBundleVersion</key><string>$version</string>
	<key>LSMinimumSystemVersion</key><string>12.0</string>
	<key>LSApplicationCategoryType</key><string>public.app-category.utilities</string>
	<key>NSHighResolutionCapable</key><true/>
</dict>
</plist>
EOF

codesign --force --deep --sign - "$app"
codesign --verify --deep --strict "$app"

# Smoke test before shipping: the bundled program runs and knows its version.
"$app/Contents/MacOS/studio-worker" version | grep -qF "$version" || die "the bundled program does not report $version"

mkdir -p "$dist"
rm -rf "$dist/Studio Worker.app"
cp -R "$app" "$dist/Studio Worker.app"
dmg="$dist/StudioWorker-$version-macos-arm64.dmg"
rm -f "$dmg"
dmgsrc="$work/dmg"; mkdir -p "$dmgsrc"
cp -R "$app" "$dmgsrc/"
ln -s /Applications "$dmgsrc/Applications"
hdiutil create -volname "Studio Worker $version" -srcfolder "$dmgsrc" -fs HFS+ -format UDZO -ov "$dmg" >/dev/null
hdiutil verify "$dmg" >/dev/null
printf 'package-macos: %s (%s bytes)\n' "${dmg#"$root/"}" "$(stat -f %z "$dmg")"
