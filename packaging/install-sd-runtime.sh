#!/usr/bin/env bash
# install-sd-runtime.sh <variant> <destroot>
#
# Installs the stable-diffusion.cpp library of <variant> (an "sd-*" entry of
# runtimes.json beside this script) into <destroot>/<os-arch>/, e.g.
# sd-linux-x64 -> runtime/sd/linux-x64/libstable-diffusion.so. No registry
# serves stable-diffusion.cpp, so the library comes from the shared runtimes
# folder ($SD_RUNTIME_SRC, default ../shared/runtimes beside the checkout;
# its README says how it was built). Every file is checked against the sha256
# pinned in runtimes.json before it is copied and again after; a missing or
# altered file stops the install and leaves an installed copy untouched.
# Running it again when the folder is there and verified does nothing.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
manifest="$here/runtimes.json"
src_root="${SD_RUNTIME_SRC:-$root/../shared/runtimes}"

die() { echo "install-sd-runtime: $*" >&2; exit 1; }
[ $# -eq 2 ] || { echo "usage: $0 <sd-variant> <destroot>" >&2; exit 2; }
variant="$1"; destroot="$2"
command -v node >/dev/null || die "node is needed to read $manifest (Debian: apt-get install nodejs)"

entry="$(node -e '
const [file, want] = process.argv.slice(1);
const all = JSON.parse(require("fs").readFileSync(file));
const v = all.find(e => e.variant === want && e.sdCpp);
if (!v) { console.error("unknown stable-diffusion.cpp variant " + want + "; known: " + all.filter(e => e.sdCpp).map(e => e.variant).join(" ")); process.exit(3); }
console.log("shared " + v.shared);
console.log("release " + v.sdCpp);
for (const f of v.files) console.log("file " + f.name + " " + f.sha256);
' "$manifest" "$variant")" || die "cannot read variant '$variant' from $manifest"

shared=""; release=""; files=()
while read -r kind a b; do
  case "$kind" in
    shared) shared="$a" ;;
    release) release="$a" ;;
    file) files+=("$a $b") ;;
  esac
done <<<"$entry"
[ -n "$shared" ] && [ "${#files[@]}" -gt 0 ] || die "manifest entry for $variant is incomplete"

dest="$destroot/${variant#sd-}"
src="$src_root/${shared#runtimes/}"

verify() {
  local dir="$1" name want got
  for f in "${files[@]}"; do
    name="${f%% *}"; want="${f##* }"
    [ -f "$dir/$name" ] || { echo "$name is missing from $dir"; return 1; }
    got="$(sha256sum "$dir/$name" | cut -d' ' -f1)"
    [ "$got" = "$want" ] || { echo "$dir/$name: sha256 mismatch: expected $want (stable-diffusion.cpp $release), got $got"; return 1; }
  done
}

if [ -d "$dest" ] && verify "$dest" >/dev/null; then
  echo "install-sd-runtime: $variant already in $dest (verified)"
  exit 0
fi
[ -d "$src" ] || die "the stable-diffusion.cpp build is not there: no folder $src (it comes from the shared runtimes folder; set SD_RUNTIME_SRC to the folder that holds sd/linux-x64/)"
problem="$(verify "$src")" || die "$problem; refusing to install it"

mkdir -p "$destroot"
stage="$destroot/.${variant#sd-}.new"
rm -rf "$stage"; mkdir -p "$stage"
for f in "${files[@]}"; do cp "$src/${f%% *}" "$stage/"; chmod 0644 "$stage/${f%% *}"; done
rm -rf "$dest"
mv "$stage" "$dest"
problem="$(verify "$dest")" || die "after install: $problem"
echo "install-sd-runtime: $variant installed in $dest (stable-diffusion.cpp $release, ${#files[@]} file(s) verified)"
