#!/usr/bin/env bash
# packaging/windows/resources.sh <version> <out folder>
#
# Compiles the Windows resources of studio-worker.exe into <out>/rsrc.o with
# mingw's windres: the app icon (Explorer, taskbar, Apps & features), the
# version shown in the file's properties, and a manifest (per-monitor DPI
# awareness so Windows does not blur the window, common controls v6,
# asInvoker). make package-windows links it in with -extldflags, so nothing
# is written into the source tree.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
version="${1:?usage: resources.sh <version> <out folder>}"
out="${2:?usage: resources.sh <version> <out folder>}"
pkgtool="${PKGTOOL:-$root/dist/.work/pkgtool}"
windres="${WINDRES:-x86_64-w64-mingw32-windres}"
command -v "$windres" >/dev/null || { echo "package-windows: $windres not found (Debian: binutils-mingw-w64-x86-64)" >&2; exit 1; }

IFS=. read -r ma mi pa _ <<<"${version%%[-+]*}.0.0.0"
ma=$((10#${ma:-0})) mi=$((10#${mi:-0})) pa=$((10#${pa:-0}))
mkdir -p "$out"
"$pkgtool" ico -src "$root/assets/icon.png" -out "$out/studio-worker.ico"
sed "s/@VIVERSION@/$ma.$mi.$pa.0/" "$root/packaging/windows/studio-worker.exe.manifest" >"$out/studio-worker.exe.manifest"
cat >"$out/rsrc.rc" <<RC
1 ICON "studio-worker.ico"
1 24 "studio-worker.exe.manifest"
1 VERSIONINFO
FILEVERSION $ma,$mi,$pa,0
PRODUCTVERSION $ma,$mi,$pa,0
FILEOS 0x40004
FILETYPE 0x1
BEGIN
  BLOCK "StringFileInfo"
  BEGIN
    BLOCK "040904B0"
    BEGIN
      VALUE "CompanyName", "minis.gg"
      VALUE "FileDescription", "Studio Worker"
      VALUE "FileVersion", "$version"
      VALUE "InternalName", "studio-worker"
      VALUE "OriginalFilename", "studio-worker.exe"
      VALUE "ProductName", "Studio Worker"
      VALUE "ProductVersion", "$version"
    END
  END
  BLOCK "VarFileInfo"
  BEGIN
    VALUE "Translation", 0x409, 1200
  END
END
RC
(cd "$out" && "$windres" -O coff -i rsrc.rc -o rsrc.o)
