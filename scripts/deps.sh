#!/usr/bin/env bash
# Installs the Debian packages the build, the tests and packaging need, when
# they are missing, with their recommended packages (Xvfb's software GL and
# Wine's helpers come that way on a fresh machine). `make run` and `make test` call it, so two commands set
# up a fresh Debian 12 machine. Needs root or sudo only when something is
# missing.
#
#   scripts/deps.sh [run|test]     (run: just what the app needs)
set -euo pipefail

run_pkgs=(
	# cgo build of Fyne (GLFW + OpenGL)
	gcc pkg-config libgl1-mesa-dev libx11-dev libxcursor-dev libxrandr-dev
	libxinerama-dev libxi-dev libxxf86vm-dev
	# yzma (purego + libffi) loads the llama.cpp runtime
	libffi8
	# npm fetches the llama.cpp runtime (packaging/fetch-runtime.sh)
	npm
)
test_pkgs=(
	# a real window, screenshots and the tray on a private session bus
	xvfb xauth x11-utils xdotool imagemagick dbus dbus-x11 libglib2.0-bin
	haskell-status-notifier-item-utils curl python3
	# packaging: Windows cross-build, NSIS, Wine to run the installer, 7z to
	# list it, Mesa's software Vulkan for the Vulkan add-on, .desktop checks
	gcc-mingw-w64-x86-64 nsis wine wine64 xz-utils file p7zip-full
	mesa-vulkan-drivers desktop-file-utils
	# a clean Debian 12 to install the .deb into
	debootstrap
)

pkgs=("${run_pkgs[@]}")
[[ "${1:-test}" == test ]] && pkgs+=("${test_pkgs[@]}")

missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# npm may come from elsewhere (nvm, nodesource); any npm will do.
if command -v npm >/dev/null; then
	missing=("${missing[@]/npm/}")
fi
missing=($(printf '%s\n' "${missing[@]}" | sed '/^$/d'))
[[ ${#missing[@]} -eq 0 ]] && exit 0

sudo=()
if [[ $(id -u) -ne 0 ]]; then
	command -v sudo >/dev/null || { echo "deps: missing Debian packages: ${missing[*]} (run as root: apt-get install ${missing[*]})" >&2; exit 1; }
	sudo=(sudo)
fi
echo "deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
