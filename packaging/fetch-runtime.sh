#!/usr/bin/env bash
# fetch-runtime.sh <variant> <destroot>
#
# Provisions the prebuilt llama.cpp libraries that yzma loads at run time.
# They come as an npm package (no `npm install`: `npm pack` fetches the
# tarball only, so no install scripts run). Every file is checked against the
# sha256 pinned in runtimes.json beside this script; nothing unverified ever
# lands in <destroot>/<variant>/. Running it again when the folder is already
# there and verified does nothing.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
manifest="$here/runtimes.json"

usage() { echo "usage: $0 <variant> <destroot>   (variants: $(variants))" >&2; exit 2; }
die() { echo "fetch-runtime: $*" >&2; exit 1; }

command -v node >/dev/null || die "node is needed to read $manifest (Debian: apt-get install npm)"

variants() { node -e 'console.log(JSON.parse(require("fs").readFileSync(process.argv[1])).map(v=>v.variant).join(" "))' "$manifest"; }

[ $# -eq 2 ] || usage
variant="$1"; destroot="$2"

# One line per fact, so that bash can read the entry without jq.
entry="$(node -e '
const [file, want] = process.argv.slice(1);
const all = JSON.parse(require("fs").readFileSync(file));
const v = all.find(e => e.variant === want);
if (!v) { console.error("unknown variant " + want + "; known: " + all.map(e => e.variant).join(" ")); process.exit(3); }
console.log("pkg " + v.npm + "@" + v.version);
console.log("dir " + v.dir);
for (const f of v.files) console.log("file " + f.name + " " + f.sha256);
for (const [l, t] of Object.entries(v.links || {})) console.log("link " + l + " " + t);
' "$manifest" "$variant")" || die "cannot read variant '$variant' from $manifest"

pkg=""; srcdir=""; files=(); links=()
while read -r kind a b; do
  case "$kind" in
    pkg) pkg="$a" ;;
    dir) srcdir="$a" ;;
    file) files+=("$a $b") ;;
    link) links+=("$a $b") ;;
  esac
done <<<"$entry"
[ -n "$pkg" ] && [ -n "$srcdir" ] && [ "${#files[@]}" -gt 0 ] || die "manifest entry for $variant is incomplete"

dest="$destroot/$variant"

sha_of() { sha256sum "$1" | cut -d' ' -f1; }

# verify <folder>: every pinned file present with its sha256; prints the first problem.
verify() {
  local dir="$1" name want got
  for f in "${files[@]}"; do
    name="${f%% *}"; want="${f##* }"
    [ -f "$dir/$name" ] || { echo "$name is missing from $dir"; return 1; }
    got="$(sha_of "$dir/$name")"
    [ "$got" = "$want" ] || { echo "$name: sha256 mismatch: expected $want, got $got"; return 1; }
  done
}

make_links() {
  local l t
  for f in "${links[@]}"; do
    l="${f%% *}"; t="${f##* }"
    [ -e "$dest/$t" ] || die "link target $t is not in $dest"
    ln -sfn "$t" "$dest/$l"
  done
}

if [ -d "$dest" ] && problem="$(verify "$dest")"; then
  make_links
  echo "fetch-runtime: $variant already in $dest (verified)"
  exit 0
fi
[ -d "$dest" ] && echo "fetch-runtime: $dest needs refreshing: $problem"

command -v npm >/dev/null || die "npm is needed to fetch $pkg (Debian: apt-get install npm)"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
echo "fetch-runtime: fetching $pkg"
( cd "$tmp" && npm pack --silent "$pkg" >/dev/null ) || die "npm pack $pkg failed"
tarball="$(ls "$tmp"/*.tgz 2>/dev/null | head -1)"
[ -n "$tarball" ] || die "npm pack $pkg produced no tarball"
mkdir -p "$tmp/x"
tar -xzf "$tarball" -C "$tmp/x"
src="$tmp/x/package/$srcdir"
[ -d "$src" ] || die "$pkg has no $srcdir folder"

# Verify in the temp folder first, so a bad package never replaces a good runtime.
problem="$(verify "$src")" || die "$pkg: $problem (refusing to install it)"

mkdir -p "$destroot"
stage="$destroot/.$variant.new"
rm -rf "$stage"; mkdir -p "$stage"
for f in "${files[@]}"; do cp "$src/${f%% *}" "$stage/"; done
rm -rf "$dest"
mv "$stage" "$dest"
make_links
problem="$(verify "$dest")" || die "after install: $problem"
echo "fetch-runtime: $variant installed in $dest ($pkg, ${#files[@]} files verified)"
