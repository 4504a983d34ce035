#!/usr/bin/env bash
# Installs Studio Worker from this unpacked tarball.
#
#   ./install.sh              for you only: ~/.local/share/studio-worker/app,
#                             ~/.local/bin/studio-worker, menu entry and icons
#                             in ~/.local/share
#   sudo ./install.sh --system  for everyone: /opt/studio-worker, /usr/local
#   ./install.sh --uninstall [--system]  removes the program again
#
# Your settings (~/.config/studio-worker) and downloaded models are never
# touched, not even by --uninstall. The per-user program has a folder of its
# own (app/) inside the app's data folder: an update replaces that folder as
# a whole, and must not carry away what the app keeps beside it (runtime
# packs it fetched, the dev studio's data, models when there is no home).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
mode=user action=install
for a in "$@"; do
  case "$a" in
    --system) mode=system ;;
    --uninstall) action=uninstall ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown option $a (try --help)" >&2; exit 2 ;;
  esac
done

if [ "$mode" = system ]; then
  app=/opt/studio-worker bindir=/usr/local/bin share=/usr/local/share
else
  data="${XDG_DATA_HOME:-$HOME/.local/share}"
  app="$data/studio-worker/app" bindir="$HOME/.local/bin" share="$data"
  # Before 0.2 the program lay in the data folder itself.
  legacy="$data/studio-worker"
fi
icons=(16 32 48 64 128 256 512)

refresh_menus() {
  command -v update-desktop-database >/dev/null && update-desktop-database -q "$share/applications" 2>/dev/null || true
  command -v gtk-update-icon-cache >/dev/null && gtk-update-icon-cache -q -t "$share/icons/hicolor" 2>/dev/null || true
}

# remove_legacy removes the program files an install before 0.2 put straight
# into the data folder (never anything else that lives there).
remove_legacy() {
  [ -n "${legacy:-}" ] || return 0
  rm -f "$legacy/studio-worker"
  rm -rf "$legacy/lib" "$legacy/lib.new"
}

if [ "$action" = uninstall ]; then
  rm -rf "$app"
  remove_legacy
  if [ -n "${legacy:-}" ]; then
    # The runtimes the app fetched for this computer belong to the program.
    rm -rf "$legacy/runtimes"
    rmdir "$legacy" 2>/dev/null || true # only when nothing else is kept there
  fi
  rm -f "$bindir/studio-worker" "$share/applications/studio-worker.desktop"
  for s in "${icons[@]}"; do rm -f "$share/icons/hicolor/${s}x${s}/apps/studio-worker.png"; done
  refresh_menus
  echo "Studio Worker removed from $app (settings and models kept)."
  exit 0
fi

[ -x "$here/studio-worker" ] && [ -d "$here/lib" ] || { echo "install.sh: run it from the unpacked studio-worker folder" >&2; exit 1; }
mkdir -p "$app" "$bindir" "$share/applications"
rm -rf "$app/lib.new"
cp -a "$here/lib" "$app/lib.new"
install -m 0755 "$here/studio-worker" "$app/studio-worker"
rm -rf "$app/lib"
mv "$app/lib.new" "$app/lib"
ln -sfn "$app/studio-worker" "$bindir/studio-worker"
remove_legacy
# The menu may not have ~/.local/bin on its PATH: point at the program itself.
sed "s|^Exec=.*|Exec=\"$app/studio-worker\"|" "$here/share/applications/studio-worker.desktop" \
  >"$share/applications/studio-worker.desktop"
for s in "${icons[@]}"; do
  src="$here/share/icons/hicolor/${s}x${s}/apps/studio-worker.png"
  [ -f "$src" ] || continue
  install -D -m 0644 "$src" "$share/icons/hicolor/${s}x${s}/apps/studio-worker.png"
done
refresh_menus
echo "Studio Worker installed in $app; start it from your menu or run $bindir/studio-worker"
