#!/usr/bin/env bash
# packaging/windows/build.sh <studio-worker.exe> <version>
#
# Wraps a cross-compiled studio-worker.exe, the Windows llama.cpp runtimes
# and the stable-diffusion.cpp DLL into dist/StudioWorker-Setup-<version>.exe with NSIS
# (installer.nsi beside this script). WIN_VARIANTS names the llama.cpp
# runtimes to carry (default: win-x64, the CPU one, alone: the app fetches
# the Vulkan or CUDA runtime for the PC's GPU as a runtime pack from its
# signed release feed; "win-x64 win-x64-vulkan win-x64-cuda" makes the
# offline installer with all three; win-x64 is required and is the default
# choice).
#
# Each runtime is verified against packaging/runtimes.json and staged by
# pkgtool: the versioned DLLs are installed under the names yzma opens
# (llama.dll, ggml.dll) and llama.dll's import of the versioned ggml is
# rewritten to ggml.dll, so one ggml is loaded (see packaging/pkgtool/pe.go).
set -euo pipefail

root="$(cd "$(dirname "$0")/../.." && pwd)"
exe="${1:?usage: build.sh <studio-worker.exe> <version>}"
version="${2:?usage: build.sh <studio-worker.exe> <version>}"
variants="${WIN_VARIANTS:-win-x64}"
dist="$root/dist"
work="$dist/.work/windows"
pkgtool="${PKGTOOL:-$dist/.work/pkgtool}"
rtroot="${RUNTIME_ROOT:-$root/runtime/llama}"

die() { echo "package-windows: $*" >&2; exit 1; }
command -v makensis >/dev/null || die "makensis not found (Debian: apt-get install nsis)"
[ -f "$exe" ] || die "no program at $exe"
file -b "$exe" | grep -q 'PE32+ executable (GUI) x86-64' || die "$exe is not a Windows x86-64 GUI program: $(file -b "$exe")"
case " $variants " in *" win-x64 "*) ;; *) die "WIN_VARIANTS must include win-x64 (the CPU runtime every install falls back on)" ;; esac

rm -rf "$work"
mkdir -p "$work/rt"

# stable-diffusion.cpp (image jobs): one CPU DLL, checked against its sha256
# pinned in runtimes.json (sd-win-x64), staged in $work/sd and installed in
# lib\ beside whichever llama.cpp runtime the donor picks. It must import
# only Windows' own DLLs: nothing else is installed for it.
sdroot="${SD_RUNTIME_ROOT:-$root/runtime/sd}"
"$root/packaging/install-sd-runtime.sh" sd-win-x64 "$sdroot" >/dev/null
sddll="$sdroot/win-x64/libstable-diffusion.dll"
sdimports="$("$pkgtool" imports "$sddll")"
for dll in ${sdimports#*: }; do
  case "${dll,,}" in
    kernel32.dll|advapi32.dll|msvcrt.dll|user32.dll|ws2_32.dll|bcrypt.dll|ole32.dll|shell32.dll) ;;
    *) die "$sddll imports $dll, which is not a Windows system DLL: the installer would not carry it" ;;
  esac
done

mkdir -p "$work/sd"
cp "$sddll" "$work/sd/"
defs=("-DSD_DLL=$work/sd/libstable-diffusion.dll")
for v in $variants; do
  "$root/packaging/fetch-runtime.sh" "$v" "$rtroot" >/dev/null
  "$pkgtool" stage -manifest "$root/packaging/runtimes.json" -variant "$v" -src "$rtroot/$v" -out "$work/rt/$v" >/dev/null
  case "$v" in
    win-x64) defs+=("-DRT_CPU=$work/rt/$v") ;;
    win-x64-vulkan) defs+=("-DRT_VULKAN=$work/rt/$v") ;;
    win-x64-cuda) defs+=("-DRT_CUDA=$work/rt/$v") ;;
    *) die "unknown Windows runtime variant $v" ;;
  esac
done

"$pkgtool" ico -src "$root/assets/icon.png" -out "$work/studio-worker.ico"

# VIProductVersion wants four numbers: 1.2.3-rc1 -> 1.2.3.0
IFS=. read -r ma mi pa _ <<<"${version%%[-+]*}.0.0.0"
viversion="$((10#${ma:-0})).$((10#${mi:-0})).$((10#${pa:-0})).0"

mkdir -p "$dist"
out="$dist/StudioWorker-Setup-$version.exe"
rm -f "$out"
makensis -V2 -NOCD \
  "-DVERSION=$version" "-DVIVERSION=$viversion" \
  "-DEXE=$exe" "-DICON=$work/studio-worker.ico" "-DOUTFILE=$out" \
  "${defs[@]}" "$root/packaging/windows/installer.nsi"
file -b "$out" | grep -q '^PE32 executable\|^PE32+ executable' || die "makensis wrote something that is not a PE program: $(file -b "$out")"
printf 'package-windows: %s (%s bytes; runtimes: %s)\n' "${out#"$root/"}" "$(stat -c %s "$out")" "$variants"
