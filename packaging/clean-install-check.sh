#!/usr/bin/env bash
# Installs the .deb into a clean, minimal Debian 12 (debootstrap) and checks
# that a donor's machine gets a working studio-worker from its declared
# dependencies alone: on the PATH, in the menu, its llama.cpp runtime
# and stable-diffusion.cpp runtimes loading, real chat and image jobs through
# the headless demo, and removal keeping the
# donor's settings.
#
#   packaging/clean-install-check.sh dist/studio-worker_<v>_amd64.deb
#
# Needs root, debootstrap, and the Debian mirror this machine's apt uses
# (read from its sources, so no address is written here).
set -euo pipefail

DEB=$(realpath "${1:?usage: clean-install-check.sh <studio-worker .deb>}")
[[ $(id -u) -eq 0 ]] || { echo "clean-install-check: needs root (debootstrap, chroot)" >&2; exit 2; }
command -v debootstrap >/dev/null || { echo "clean-install-check: needs debootstrap" >&2; exit 2; }

mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
[[ -n "$mirror" ]] || mirror=$(awk '$1=="deb"{print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
[[ -n "$mirror" ]] || { echo "clean-install-check: no Debian mirror in this machine's apt sources" >&2; exit 2; }

ROOT=$(mktemp -d /tmp/clean-deb12.XXXXXX)
cleanup() {
	umount "$ROOT/proc" 2>/dev/null || true
	rm -rf "$ROOT"
}
trap cleanup EXIT

pass=0 fail=0
check() { # check "what" command...
	local what=$1; shift
	if "$@"; then echo "clean-install-check: ok: $what"; pass=$((pass + 1))
	else echo "clean-install-check: FAILED: $what" >&2; fail=$((fail + 1)); fi
}
in_root() { chroot "$ROOT" env -i HOME=/root LANG=C.UTF-8 PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive bash -c "$1"; }

echo "clean-install-check: a minimal Debian 12 in $ROOT"
debootstrap --variant=minbase bookworm "$ROOT" "$mirror" >"$ROOT.log" 2>&1 || { tail -5 "$ROOT.log" >&2; exit 1; }
rm -f "$ROOT.log"
cp /etc/resolv.conf "$ROOT/etc/" 2>/dev/null || true
mount -t proc proc "$ROOT/proc"
cp "$DEB" "$ROOT/tmp/"
deb_in=/tmp/$(basename "$DEB")

check "apt-get installs the .deb with its dependencies" in_root "apt-get update -qq 2>/dev/null && apt-get install -y -qq $deb_in >/tmp/install.log 2>&1 || { tail -20 /tmp/install.log; false; }"
check "studio-worker is on the PATH and prints its version" in_root "studio-worker version | grep -q '^studio-worker '"
check "its llama.cpp runtime loads from the installed lib folder" in_root "studio-worker version --verbose 2>&1 | grep -q 'llama.cpp runtime: CPU build from /opt/studio-worker/lib'"
check "its stable-diffusion.cpp runtime loads from the installed lib folder" in_root "studio-worker version --verbose 2>&1 | grep -q 'stable-diffusion.cpp runtime: master-827-97d2990 .* from /opt/studio-worker/lib/libstable-diffusion.so'"
check "the menu entry is installed" in_root "test -f /usr/share/applications/studio-worker.desktop"
check "the headless demo runs real chat and image jobs" in_root "cd /tmp && timeout 600 studio-worker demo --jobs 2 --image-jobs 2 >/tmp/demo.log 2>&1; grep '^image job' /tmp/demo.log; tail -1 /tmp/demo.log; grep -q '^demo: 4 of 4 jobs done' /tmp/demo.log && [ \"\$(grep -c '^image job .* bytes)\$' /tmp/demo.log)\" = 2 ]"
in_root "mkdir -p /root/.config/studio-worker && echo 'models_dir = \"/root/models\"' >/root/.config/studio-worker/settings.toml"
check "apt-get remove takes the program away" in_root "apt-get remove -y -qq studio-worker >/dev/null 2>&1 && ! test -e /opt/studio-worker/studio-worker"
check "removal keeps the donor's settings" in_root "test -f /root/.config/studio-worker/settings.toml"

echo "clean-install-check: $pass passed, $fail failed"
[[ $fail -eq 0 ]]
