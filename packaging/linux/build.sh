#!/usr/bin/env bash
# packaging/linux/build.sh <studio-worker binary> <version>
#
# Builds, into dist/:
#   studio-worker_<version>_amd64.deb          the app, the CPU llama.cpp runtime,
#                                              menu entry and icons
#   studio-worker-vulkan_<version>_amd64.deb   add-on: the Vulkan backend, dropped
#                                              into the same runtime folder
#   studio-worker-<version>-linux-amd64.tar.xz the same files for a per-user
#                                              install without root (install.sh)
#
# Installed layout (the app finds its runtime in lib/ next to the real
# executable; engine/llama FindLibDir):
#   /opt/studio-worker/studio-worker      (/usr/bin/studio-worker -> here)
#   /opt/studio-worker/lib/               libllama.so, libggml*.so, ..., and
#                                         libstable-diffusion.so (engine/sd FindLib)
#   /usr/share/applications/studio-worker.desktop
#   /usr/share/icons/hicolor/<n>x<n>/apps/studio-worker.png
# The packages have no maintainer scripts: installing or removing them never
# touches a donor's settings (~/.config/studio-worker) or models.
set -euo pipefail

root="$(cd "$(dirname "$0")/../.." && pwd)"
bin="${1:?usage: build.sh <binary> <version>}"
version="${2:?usage: build.sh <binary> <version>}"
dist="$root/dist"
work="$dist/.work/linux"
pkgtool="${PKGTOOL:-$dist/.work/pkgtool}"
nfpm="${NFPM:?NFPM must name the nfpm binary}"
rtroot="${RUNTIME_ROOT:-$root/runtime/llama}"
sdroot="${SD_RUNTIME_ROOT:-$root/runtime/sd}"

die() { echo "package-linux: $*" >&2; exit 1; }
[ -x "$bin" ] || die "no binary at $bin"
file -b "$bin" | grep -q 'ELF 64-bit.*x86-64' || die "$bin is not a linux/amd64 program: $(file -b "$bin")"

# The runtimes, fetched (and verified) by the llama engineer's script, then
# verified again and laid out by pkgtool: a file changed since it was
# fetched stops the build here.
for v in linux-x64 linux-x64-vulkan; do
  "$root/packaging/fetch-runtime.sh" "$v" "$rtroot" >/dev/null
done
rm -rf "$work"
mkdir -p "$work/root/opt/studio-worker" "$work/vulkan" "$work/sd"
"$pkgtool" stage -manifest "$root/packaging/runtimes.json" -variant linux-x64 \
  -src "$rtroot/linux-x64" -out "$work/root/opt/studio-worker/lib" >/dev/null
"$pkgtool" stage -manifest "$root/packaging/runtimes.json" -variant linux-x64-vulkan \
  -src "$rtroot/linux-x64-vulkan" -out "$work/vulkan/lib" >/dev/null
# stable-diffusion.cpp beside llama.cpp's libraries: installed (and verified)
# by make runtime's script, verified again by pkgtool. It carries its own
# ggml and is opened with RTLD_LOCAL, so the two never mix.
"$root/packaging/install-sd-runtime.sh" sd-linux-x64 "$sdroot" >/dev/null
"$pkgtool" stage -manifest "$root/packaging/runtimes.json" -variant sd-linux-x64 \
  -src "$sdroot/linux-x64" -out "$work/sd/lib" >/dev/null
cp "$work/sd/lib/libstable-diffusion.so" "$work/root/opt/studio-worker/lib/"

# The Vulkan add-on ships only libggml-vulkan.so, loaded by the CPU build's
# ggml from the same folder. That is sound only while both builds share one
# libggml-base.so (the backend's only ggml dependency): check it.
cmp -s "$work/root/opt/studio-worker/lib/libggml-base.so" "$work/vulkan/lib/libggml-base.so" ||
  die "libggml-base.so differs between linux-x64 and linux-x64-vulkan: the Vulkan add-on would not match the CPU runtime"

install -m 0755 "$bin" "$work/root/opt/studio-worker/studio-worker"
"$pkgtool" icons -src "$root/assets/icon.png" -out "$work/icons" -name studio-worker

# What both packages say about themselves besides their name, so the add-on
# and the app it extends never disagree on version or maintainer.
nfpm_common() {
  cat <<EOF
arch: amd64
platform: linux
version: "$version"
section: utils
priority: optional
maintainer: "minis.gg <studio@minis.gg>"
vendor: minis.gg
homepage: https://minis.gg
EOF
}

# nfpm lists every file explicitly (no globs), so the package holds exactly
# what was staged.
{
  echo "name: studio-worker"
  nfpm_common
  cat <<EOF
description: |-
  Lend your GPU to the minis.gg studio.
  Studio Worker is a tray app (and headless worker) that takes jobs from
  the minis.gg studio and runs them locally with llama.cpp (chat) and
  stable-diffusion.cpp (images, on the CPU). Settings and
  models stay in the donor's home folder and are kept when the package is
  removed.
depends:
  - libffi8
  - libgl1
  - libx11-6
  - libxcursor1
  - libxrandr2
  - libxinerama1
  - libxi6
  - libxxf86vm1
  - libstdc++6
  - libgcc-s1
  - libgomp1
suggests:
  - studio-worker-vulkan
deb:
  compression: xz
contents:
  - src: $work/root/opt/studio-worker/studio-worker
    dst: /opt/studio-worker/studio-worker
    file_info: {mode: 0755}
  - src: /opt/studio-worker/studio-worker
    dst: /usr/bin/studio-worker
    type: symlink
  - src: $root/packaging/linux/studio-worker.desktop
    dst: /usr/share/applications/studio-worker.desktop
    file_info: {mode: 0644}
EOF
  for f in "$work/root/opt/studio-worker/lib"/*; do
    n="$(basename "$f")"
    if [ -L "$f" ]; then
      printf '  - src: %s\n    dst: /opt/studio-worker/lib/%s\n    type: symlink\n' "$(readlink "$f")" "$n"
    else
      printf '  - src: %s\n    dst: /opt/studio-worker/lib/%s\n    file_info: {mode: 0644}\n' "$f" "$n"
    fi
  done
  for f in "$work/icons"/*/apps/studio-worker.png; do
    rel="${f#"$work/icons/"}"
    printf '  - src: %s\n    dst: /usr/share/icons/hicolor/%s\n    file_info: {mode: 0644}\n' "$f" "$rel"
  done
} >"$work/nfpm.yaml"

{
  echo "name: studio-worker-vulkan"
  nfpm_common
  cat <<EOF
description: |-
  Vulkan GPU backend for Studio Worker.
  Adds llama.cpp's Vulkan backend to Studio Worker's runtime, so that jobs
  run on AMD, Intel and NVIDIA GPUs through their Vulkan drivers.
depends:
  - studio-worker (= $version)
  - libvulkan1
deb:
  compression: xz
contents:
  - src: $work/vulkan/lib/libggml-vulkan.so
    dst: /opt/studio-worker/lib/libggml-vulkan.so
    file_info: {mode: 0644}
EOF
} >"$work/nfpm-vulkan.yaml"

mkdir -p "$dist"
deb="$dist/studio-worker_${version}_amd64.deb"
vdeb="$dist/studio-worker-vulkan_${version}_amd64.deb"
rm -f "$deb" "$vdeb"
"$nfpm" package --config "$work/nfpm.yaml" --packager deb --target "$deb" >/dev/null
"$nfpm" package --config "$work/nfpm-vulkan.yaml" --packager deb --target "$vdeb" >/dev/null

# The tarball: the same tree plus install.sh for a per-user (or root)
# install, like `fyne package -os linux`'s tar.xz but with the runtime.
tdir="$work/tar/studio-worker-$version"
mkdir -p "$tdir/share/applications" "$tdir/share/icons"
cp -a "$work/root/opt/studio-worker/." "$tdir/"
cp "$root/packaging/linux/studio-worker.desktop" "$tdir/share/applications/"
cp -a "$work/icons" "$tdir/share/icons/hicolor"
install -m 0755 "$root/packaging/linux/install.sh" "$tdir/install.sh"
tarball="$dist/studio-worker-$version-linux-amd64.tar.xz"
rm -f "$tarball"
tar -C "$work/tar" --owner=0 --group=0 --numeric-owner -cf - "studio-worker-$version" | xz -T1 -6 >"$tarball"

for f in "$deb" "$vdeb" "$tarball"; do
  printf 'package-linux: %s (%s bytes)\n' "${f#"$root/"}" "$(stat -c %s "$f")"
done
