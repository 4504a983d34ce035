#!/usr/bin/env bash
# packaging/check.sh: proves the installers `make package-linux` and
# `make package-windows` left in dist/ by using them as a donor would.
#
#  .deb      apt-get install, `studio-worker version` from /usr/bin, the menu
#            entry and icons, the runtime next to the program loading through
#            yzma (and the Vulkan add-on registering a Vulkan device where
#            Mesa's lavapipe is installed), no maintainer scripts, apt-get
#            remove leaving the donor's files alone.
#  .tar.xz   install.sh into a scratch HOME, version, uninstall.
#  Setup.exe a PE program holding the uninstaller and the runtime DLLs (7z),
#            silent installs under Wine (default CPU runtime, then Vulkan with
#            start at login), installed files byte-equal to the staged
#            runtime, the Start-menu shortcut, the Apps & features entry,
#            the runtime loading with ONE ggml (dllcheck.exe), the installed
#            studio-worker.exe itself under Wine (version --verbose naming
#            the runtime in lib\, demo chat jobs through the installed DLLs,
#            a headless run registering with a Linux dev studio on loopback
#            and completing a job it is sent, the desktop window on Xvfb with
#            a screenshot), the idle-time probe's GetLastInputInfo and the
#            program list's process snapshot (their tests), the silent uninstaller removing the program and
#            keeping the donor's data.
#
# Run as root on Debian 12 (apt-get). Needs: wine, file, mingw-w64, curl,
# Xvfb, xdotool, imagemagick (scripts/deps.sh installs them); 7z optional.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
version="${PKG_VERSION:?PKG_VERSION must be set (make package-check sets it)}"
dist="$root/dist"
work="$dist/.work/check"
deb="$dist/studio-worker_${version}_amd64.deb"
vdeb="$dist/studio-worker-vulkan_${version}_amd64.deb"
tarball="$dist/studio-worker-$version-linux-amd64.tar.xz"
setup="$dist/StudioWorker-Setup-$version.exe"

pass=0
fail() { echo "package-check: FAIL: $*" >&2; exit 1; }
ok() { pass=$((pass + 1)); echo "package-check: ok: $*"; }
t0=$SECONDS
phase() { echo "package-check: --- $* (at $((SECONDS - t0)) s)"; }

for f in "$deb" "$vdeb" "$tarball" "$setup"; do [ -f "$f" ] || fail "missing $f: run make package-linux package-windows"; done
# (all four are required even for CHECK_ONLY: the sizes are reported together)
rm -rf "$work"; mkdir -p "$work"
go build -o "$work/llamacheck" ./packaging/llamacheck

only="${CHECK_ONLY:-all}" # all, linux or windows (for working on one half)

check_deb() {
phase ".deb"
ctrl="$(dpkg-deb --ctrl-tarfile "$deb" | tar -t)"
for s in preinst postinst prerm postrm; do
  grep -qx "./$s" <<<"$ctrl" && fail "$deb has a $s script: removing it must not run code"
done
ok "no maintainer scripts in the .deb (install and removal touch only its own files)"
dpkg-deb -c "$deb" | awk '{print $6}' | grep -v -E '^\./(opt/studio-worker|usr/bin|usr/share/applications|usr/share/icons)(/|$)|^\./$|^\./(opt|usr|usr/share)/$' &&
  fail "the .deb installs outside /opt/studio-worker, /usr/bin and /usr/share" || true
ok ".deb contents confined to /opt/studio-worker, /usr/bin/studio-worker, /usr/share/{applications,icons}"

# The donor's own files, to compare after removal.
donor_state() { find "$HOME/.config/studio-worker" "$HOME/models" -type f -exec sha256sum {} + 2>/dev/null | sort || true; }
before="$(donor_state)"

cleanup_deb() { apt-get remove -y -qq studio-worker-vulkan studio-worker >/dev/null 2>&1 || true; }
trap cleanup_deb EXIT
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -qq "$deb" >/dev/null || fail "apt-get install $deb failed"
[ "$(readlink -f /usr/bin/studio-worker)" = /opt/studio-worker/studio-worker ] || fail "/usr/bin/studio-worker does not lead to /opt/studio-worker/studio-worker"
out="$(LANG=C.UTF-8 /usr/bin/studio-worker version 2>&1)" || fail "studio-worker version failed: $out"
grep -qF "studio-worker $version" <<<"$out" || fail "studio-worker version printed '$out', not $version"
# The updater reads this copy as the package's (dpkg owns it), so an update
# is downloaded and the donor told the apt command; nothing is replaced.
# The feed address answers nothing: only the first line matters here.
out="$(LANG=C.UTF-8 /usr/bin/studio-worker update --check --feed http://127.0.0.1:9/feed.json 2>&1 || true)"
grep -qF "installed by the .deb package (dpkg owns /opt/studio-worker/studio-worker)" <<<"$out" ||
  fail "the updater does not see the .deb install as one: $out"
ok "the updater reads the .deb install as dpkg's: it would say the apt command, never replace files"
ok "installed /usr/bin/studio-worker version: $(tail -1 <<<"$out")"
[ -f /usr/share/applications/studio-worker.desktop ] || fail "no menu entry"
if command -v desktop-file-validate >/dev/null; then
  desktop-file-validate /usr/share/applications/studio-worker.desktop || fail "the menu entry does not validate"
fi
for s in 16 32 48 64 128 256 512; do
  f="/usr/share/icons/hicolor/${s}x${s}/apps/studio-worker.png"
  file -b "$f" | grep -q "PNG image data, $s x $s" || fail "$f is not a ${s}x${s} PNG"
done
ok "menu entry and icons 16..512 installed"
out="$("$work/llamacheck" /opt/studio-worker/lib 2>&1)" || fail "the installed runtime does not load: $out"
grep -q '^device .*: CPU' <<<"$out" || fail "the installed runtime registered no CPU device: $out"
ok "installed runtime loads through yzma: $(grep '^device' <<<"$out" | head -1)"
# stable-diffusion.cpp from lib/ next to the program, and a real image job
# through it (and a chat job through llama.cpp) with the installed program.
out="$(env -u STUDIO_WORKER_SD_LIB -u STUDIO_WORKER_LLAMA_LIB LANG=C.UTF-8 /usr/bin/studio-worker version --verbose 2>&1)" || fail "version --verbose failed: $out"
grep -q '^stable-diffusion.cpp runtime: master-827-97d2990 .* from /opt/studio-worker/lib/libstable-diffusion.so' <<<"$out" ||
  fail "the installed program does not load stable-diffusion.cpp from its lib/: $out"
ok "installed stable-diffusion.cpp: $(grep '^stable-diffusion.cpp runtime' <<<"$out" | cut -c1-120)"
rc=0; out="$(cd "$work" && env -u STUDIO_WORKER_SD_LIB -u STUDIO_WORKER_LLAMA_LIB timeout 600 /usr/bin/studio-worker demo --jobs 1 --image-jobs 2 --dir "$work/deb-demo" 2>&1)" || rc=$?
[ "$rc" = 0 ] && grep -q '^demo: 3 of 3 jobs done' <<<"$out" && [ "$(grep -c '^image job .* -> .*\.\(png\|webp\) ([0-9]* bytes)$' <<<"$out")" = 2 ] ||
  fail "the installed program's demo with image jobs (exit $rc): $out"
ok "installed program ran a chat job and 2 image jobs (PNG and WebP) through its own lib/: $(grep -o '/[^ ]*results/[^ ]*' <<<"$out" | head -1)"

apt-get install -y -qq "$vdeb" >/dev/null || fail "apt-get install $vdeb failed"
[ -f /opt/studio-worker/lib/libggml-vulkan.so ] || fail "the Vulkan add-on did not install libggml-vulkan.so"
if ls /usr/share/vulkan/icd.d/lvp_icd*.json >/dev/null 2>&1; then
  # lavapipe is a CPU-type Vulkan device, which ggml skips unless named.
  out="$(GGML_VK_VISIBLE_DEVICES=0 "$work/llamacheck" -want-device Vulkan /opt/studio-worker/lib 2>&1)" ||
    fail "the Vulkan add-on did not register a Vulkan device: $out"
  ok "Vulkan add-on registers a device: $(grep '^device .*Vulkan' <<<"$out" | head -1)"
else
  out="$("$work/llamacheck" /opt/studio-worker/lib 2>&1)" || fail "runtime with the Vulkan add-on does not load: $out"
  grep -q 'loaded Vulkan backend' <<<"$out" || fail "the Vulkan backend did not load: $out"
  ok "Vulkan add-on backend loads (no Vulkan device here: install mesa-vulkan-drivers to test one)"
fi

apt-get remove -y -qq studio-worker-vulkan studio-worker >/dev/null || fail "apt-get remove failed"
trap - EXIT
[ ! -e /opt/studio-worker ] && [ ! -e /usr/bin/studio-worker ] && [ ! -e /usr/share/applications/studio-worker.desktop ] ||
  fail "apt-get remove left program files behind"
[ "$(donor_state)" = "$before" ] || fail "removing the package changed the donor's settings or models"
ok "apt-get remove took the program away and left ~/.config/studio-worker and ~/models as they were"

}

check_tarball() {
phase ".tar.xz"
th="$work/tarhome"; mkdir -p "$th"
tar -C "$work" -xJf "$tarball"
tdir="$work/studio-worker-$version"
HOME="$th" XDG_DATA_HOME= "$tdir/install.sh" >/dev/null
out="$(HOME="$th" LANG=C.UTF-8 "$th/.local/bin/studio-worker" version 2>&1)" || fail "tarball install: version failed: $out"
grep -qF "studio-worker $version" <<<"$out" || fail "tarball install: version printed '$out'"
out="$(HOME="$th" XDG_DATA_HOME= LANG=C.UTF-8 "$th/.local/bin/studio-worker" update --check --feed http://127.0.0.1:9/feed.json 2>&1 || true)"
grep -qF "installed for this user by install.sh in $th/.local/share/studio-worker/app" <<<"$out" ||
  fail "tarball install: the updater does not see it as install.sh's: $out"
grep -q "^Exec=\"$th/.local/share/studio-worker/app/studio-worker\"" "$th/.local/share/applications/studio-worker.desktop" ||
  fail "tarball install: the menu entry does not point at the program"
[ -f "$th/.local/share/icons/hicolor/48x48/apps/studio-worker.png" ] || fail "tarball install: no icon"
mkdir -p "$th/.config/studio-worker"; echo 'studio_url = "x"' >"$th/.config/studio-worker/settings.toml"
HOME="$th" XDG_DATA_HOME= "$tdir/install.sh" --uninstall >/dev/null
[ ! -e "$th/.local/share/studio-worker" ] && [ ! -e "$th/.local/bin/studio-worker" ] || fail "install.sh --uninstall left the program"
[ -f "$th/.config/studio-worker/settings.toml" ] || fail "install.sh --uninstall removed the donor's settings"
ok "tarball: per-user install.sh, version, menu entry, uninstall keeping settings"

}

# The installed Windows program itself, under Wine: version, demo jobs, and a
# headless run against a Linux dev studio on loopback. Debian 12's Wine 8
# lacks bcryptprimitives.dll, which the Go runtime loads at start, so a
# stand-in built from packaging/windows/bcryptprimitives.c goes into this
# throw-away prefix's system32 (test-only; the installer never has it).
check_wine_program() {
  local exe="$inst/studio-worker.exe" out rc
  phase "the installed Windows program under Wine"
  x86_64-w64-mingw32-gcc -shared -O2 -o "$work/bcryptprimitives.dll" packaging/windows/bcryptprimitives.c -ladvapi32
  cp "$work/bcryptprimitives.dll" "$WINEPREFIX/drive_c/windows/system32/bcryptprimitives.dll"
  out="$(cd "$work" && timeout 120 "$WINE" "$exe" version --verbose 2>&1 | tr -d '\r')" || fail "studio-worker.exe version --verbose under Wine failed: $out"
  grep -qF "studio-worker $version" <<<"$out" || fail "studio-worker.exe version printed '$out', not $version"
  grep -qF "llama.cpp runtime: CPU build from $inst_w\\lib" <<<"$out" ||
    fail "studio-worker.exe version --verbose does not name the installed runtime in $inst_w\\lib: $out"
  ok "installed studio-worker.exe under Wine: $(grep 'llama.cpp runtime' <<<"$out")"
  local sdpin
  sdpin="$(sed -n '/"variant": "sd-win-x64"/,/}/s/.*"sdCpp": "\([^"]*\)".*/\1/p' packaging/runtimes.json)"
  [ -n "$sdpin" ] || fail "runtimes.json pins no sd-win-x64 release"
  grep -qF "stable-diffusion.cpp runtime: $sdpin " <<<"$out" && grep -qF "from $inst_w\\lib\\libstable-diffusion.dll" <<<"$out" ||
    fail "studio-worker.exe version --verbose does not load the installed stable-diffusion.cpp $sdpin from $inst_w\\lib: $out"
  ok "installed stable-diffusion.cpp DLL loads under Wine: $(grep 'stable-diffusion.cpp runtime' <<<"$out")"

  local demo="$work/wine-demo" demo_w
  mkdir -p "$demo"; demo_w="$(winepath -w "$demo" 2>/dev/null | tr -d '\r')"
  # Image jobs too where this program's demo has them (one: about 13 s
  # under Wine); then at least one must come back as an image file.
  local demo_args=(--jobs 2) images=0 help
  help="$(cd "$work" && "$WINE" "$exe" help 2>&1 | tr -d '\r')" || true
  grep -q -- '--image-jobs' <<<"$help" && { demo_args+=(--image-jobs 1); images=1; }
  rc=0; out="$(cd "$work" && timeout 600 "$WINE" "$exe" demo "${demo_args[@]}" --dir "$demo_w" 2>&1 | tr -d '\r')" || rc=$?
  [ "$rc" = 0 ] && grep -Eq '^demo: ([0-9]+) of \1 jobs done' <<<"$out" || fail "studio-worker.exe demo under Wine (exit $rc): $out"
  [ "$(grep -c '^job .*tokens/s)$' <<<"$out")" = 2 ] || fail "studio-worker.exe demo under Wine did not answer 2 chat jobs: $out"
  if [ "$images" = 1 ]; then
    grep -Eq '^image job [0-9/]+ .* -> .*\.(png|webp) \([1-9][0-9]* bytes\)$' <<<"$out" ||
      fail "studio-worker.exe demo under Wine made no image through the installed stable-diffusion.cpp DLL: $out"
  fi
  ok "studio-worker.exe demo under Wine: $(grep -c '^job .*tokens/s)$' <<<"$out") chat jobs through the installed DLLs ($(grep -o '[0-9.]* tokens/s' <<<"$out" | head -1))$([ "$images" = 1 ] && echo ", $(grep -c '^image job .* bytes)$' <<<"$out") image job(s) through libstable-diffusion.dll")"

  # run: the installed program registers with a Linux dev studio and
  # completes the jobs it is sent, on the models the demo generated: a chat
  # job, and an image job where the demo made images.
  local llm sdxs="" studio_log="$work/devstudio.log" url="" t
  llm="$(find "$demo" -path '*/studio/models/*' -name 'tiny-llama-*.gguf' -type f | head -1)"
  [ -n "$llm" ] || fail "the Wine demo left no tiny-llama model in $demo"
  mkdir -p "$work/devmodels"; cp "$llm" "$work/devmodels/"
  if [ "$images" = 1 ]; then
    sdxs="$(find "$demo" -path '*/studio/models/*' -name 'tiny-sdxs-*.gguf' -type f | head -1)"
    [ -n "$sdxs" ] || fail "the Wine demo made images but left no tiny-sdxs model in $demo"
    cp "$sdxs" "$work/devmodels/"
  fi
  "$dist/.work/linux-bin/studio-worker" devstudio --addr 127.0.0.1:0 --data "$work/devstudio" \
    --models "$work/devmodels" --auto-approve >"$studio_log" 2>&1 &
  local studio_pid=$!
  for _ in $(seq 100); do
    url="$(grep -o 'listening on http://127.0.0.1:[0-9]*/' "$studio_log" | head -1 | cut -d' ' -f3)" || true
    [ -n "$url" ] && break; sleep 0.1
  done
  [ -n "$url" ] || { kill "$studio_pid"; fail "the Linux dev studio did not start: $(cat "$studio_log")"; }
  (cd "$work" && exec "$WINE" "$exe" run --studio "$url" --config "$(winepath -w "$work/wine-run-config" 2>/dev/null | tr -d '\r')" >"$work/wine-run.log" 2>&1) &
  local run_pid=$!
  stop_run() { kill "$run_pid" 2>/dev/null || true; wineserver -k 2>/dev/null || true; wineserver -w; kill "$studio_pid" 2>/dev/null || true; wait "$studio_pid" 2>/dev/null || true; }
  for _ in $(seq 600); do
    { curl -fsS "${url}dev/workers" | grep -q '"connected":true'; } && break; sleep 0.2
  done
  curl -fsS "${url}dev/workers" | grep -q '"connected":true' || { stop_run; fail "studio-worker.exe run did not register and connect: $(tail -5 "$work/wine-run.log")"; }
  # run_job ENGINE MODELFILE TASKJSON: posts a job on a model in devmodels,
  # waits for it to end, and fails the check unless it is done.
  run_job() {
    local engine="$1" model="$2" task="$3" name sha size jid="" state="" out t0=$SECONDS
    name="$(basename "$model")"; sha="$(sha256sum "$model" | cut -d' ' -f1)"; size="$(stat -c %s "$model")"
    jid="$(curl -fsS -X POST "${url}dev/jobs" -H 'Content-Type: application/json' -d '{
      "task": '"$task"', "model": "wine-'"$engine"'", "vramGbEstimate": 0.2, "gameId": "package-check", "assetName": "wine-run",
      "modelSource": {"engine": "'"$engine"'", "files": [{"role": "model", "url": "'"${url}dev/models/$name"'",
        "filename": "'"$name"'", "approxBytes": '"$size"', "sha256": "'"$sha"'"}]}}' |
      grep -o '"jobId":"[^"]*"' | cut -d'"' -f4)" || true
    [ -n "$jid" ] || { stop_run; fail "the dev studio did not take the check's $engine job"; }
    while [ $((SECONDS - t0)) -lt 300 ]; do
      state="$(curl -fsS "${url}dev/jobs/$jid" | grep -o '"state":"[a-z]*"' | cut -d'"' -f4)" || true
      case "$state" in done|failed) break ;; esac
      sleep 0.5
    done
    out="$(curl -fsS "${url}dev/jobs/$jid")" || true
    [ "$state" = done ] || { stop_run; fail "studio-worker.exe run did not complete the $engine job (state '$state'): $out; worker log: $(tail -5 "$work/wine-run.log")"; }
    done_jobs+=("$engine job in $((SECONDS - t0)) s")
  }
  local done_jobs=()
  t=$SECONDS
  run_job llama-cpp "$work/devmodels/$(basename "$llm")" \
    '{"kind": "llm", "messages": [{"role": "user", "content": "Name a moon of Saturn."}], "maxTokens": 16}'
  if [ -n "$sdxs" ]; then
    run_job sd-cpp "$work/devmodels/$(basename "$sdxs")" \
      '{"kind": "image", "prompt": "a lighthouse at dusk", "width": 64, "height": 64, "steps": 1, "seed": 7, "ext": "png"}'
    [ -n "$(find "$work/devstudio" -name '*.png' -size +100c)" ] || { stop_run; fail "the image job is done but the dev studio stored no PNG"; }
  fi
  stop_run
  local kids
  kids="$(grep -o 'the [a-z]* engine started (process [0-9]*)' "$work/wine-run.log" | paste -sd, -)" || true
  ok "installed studio-worker.exe run under Wine registered with a Linux dev studio on loopback and completed: $(IFS=,; echo "${done_jobs[*]}")${kids:+ ($kids)}"
}

# The idle-time probe's Windows half (controls/presence: GetLastInputInfo
# against GetTickCount) through its own tests, in the same prefix (after
# check_wine_program put the bcryptprimitives stand-in there).
check_wine_presence() {
  local out
  phase "the Windows idle-time probe under Wine"
  GOOS=windows GOARCH=amd64 go test -c -o "$work/presence.test.exe" ./controls/presence
  out="$(cd "$work" && timeout 120 "$WINE" "$work/presence.test.exe" -test.v 2>&1 | tr -d '\r')" ||
    fail "controls/presence's tests under Wine failed: $(tail -5 <<<"$out")"
  grep -q -- '--- PASS: TestLastInputAnswers' <<<"$out" || fail "controls/presence's GetLastInputInfo test did not run under Wine: $(tail -5 <<<"$out")"
  ok "the Windows idle-time probe under Wine: GetLastInputInfo says $(grep -o 'idle [^ ]* (Windows GetLastInputInfo)' <<<"$out" | cut -d' ' -f2) since the last input"
}

# The program list's and the nvidia-smi runner's Windows halves
# (controls/gpuwatch) through the package's own tests, in the same prefix:
# the process snapshot finds a stand-in game under a distinctive name while
# it runs and not after; a stand-in nvidia-smi.exe runs without a console
# window and its failure reads as the real one's.
check_wine_gpuwatch() {
  local out t
  phase "the Windows program list and nvidia-smi runner under Wine"
  GOOS=windows GOARCH=amd64 go test -c -o "$work/gpuwatch.test.exe" ./controls/gpuwatch
  out="$(cd "$work" && timeout 180 "$WINE" "$work/gpuwatch.test.exe" -test.v 2>&1 | tr -d '\r')" ||
    fail "controls/gpuwatch's tests under Wine failed: $(tail -5 <<<"$out")"
  for t in TestProgramsRealProcess TestSMIRunner TestSMIRunnerFails; do
    grep -q -- "--- PASS: $t (" <<<"$out" || fail "controls/gpuwatch's $t did not pass under Wine: $(tail -5 <<<"$out")"
  done
  ok "the Windows program list under Wine: $(grep -o 'found fakegame-[^ ]* (pid [0-9]*) while it ran, not after' <<<"$out"); a stand-in nvidia-smi.exe ran (CREATE_NO_WINDOW) and was read"
}

# The desktop app's window under Wine on Xvfb: Fyne's GLFW over WGL, which
# Wine turns into GLX on Mesa's software renderer. Against its embedded dev
# studio, it must show the window and finish the three demo jobs; the
# screenshot is left in $work/wine-window.png (docs/screenshots/ has a copy).
check_wine_window() {
  local d xvfb_pid gui_pid wid="" n=0 log="$work/wine-gui.log"
  phase "the Windows desktop window under Wine on Xvfb"
  for tool in Xvfb xdotool import; do
    command -v "$tool" >/dev/null || fail "the Wine window check needs $tool (scripts/deps.sh installs it)"
  done
  for d in $(seq 90 99); do [ -e "/tmp/.X11-unix/X$d" ] || [ -e "/tmp/.X$d-lock" ] || break; done
  Xvfb ":$d" -screen 0 1280x800x24 -nolisten tcp >"$work/xvfb.log" 2>&1 &
  xvfb_pid=$!
  mkdir -p "$work/wine-gui"
  (cd "$work" && DISPLAY=":$d" exec "$WINE" "$inst/studio-worker.exe" --dev-studio \
    --dev-dir "$(winepath -w "$work/wine-gui" 2>/dev/null | tr -d '\r')" >"$log" 2>&1) &
  gui_pid=$!
  stop_gui() { kill "$gui_pid" 2>/dev/null || true; wineserver -k 2>/dev/null || true; wineserver -w; kill "$xvfb_pid" 2>/dev/null || true; wait "$xvfb_pid" 2>/dev/null || true; }
  for _ in $(seq 600); do
    wid="$(DISPLAY=":$d" xdotool search --onlyvisible --name '^Studio Worker$' 2>/dev/null | head -1)" || true
    [ -n "$wid" ] && break; sleep 0.2
  done
  [ -n "$wid" ] || { stop_gui; fail "the desktop app's window did not open under Wine: $(tail -5 "$log")"; }
  for _ in $(seq 900); do
    n="$(grep -c 'studio confirmed completion' "$log" || true)"
    [ "$n" -ge 3 ] && break; sleep 0.2
  done
  [ "$n" -ge 3 ] || { stop_gui; fail "the desktop app under Wine finished $n of 3 demo jobs: $(tail -5 "$log")"; }
  sleep 2 # the Status page redraws on its own after the last job; nothing to wait on from outside
  DISPLAY=":$d" import -window "$wid" "$work/wine-window.png" || { stop_gui; fail "no screenshot of the Wine window"; }
  stop_gui
  ok "the desktop app's window opened under Wine on Xvfb (WGL on Mesa) and finished 3 demo jobs; screenshot in ${work#"$root/"}/wine-window.png"
}

check_windows() {
phase "Windows installer"
file -b "$setup" | grep -q '^PE32' || fail "$setup is not a PE program: $(file -b "$setup")"
ok "installer is a PE program: $(file -b "$setup")"
if command -v 7z >/dev/null; then
  listing="$(7z l -ba "$setup")"
  for f in uninstall.exe studio-worker.exe lib/llama.dll lib/ggml.dll lib/ggml-base.dll lib/ggml-cpu-x64.dll lib/libstable-diffusion.dll; do
    grep -q " $f\$" <<<"$listing" || fail "installer holds no $f"
  done
  grep -q 'ggml\.v0\|llama\.v0' <<<"$listing" && fail "installer holds a versioned ggml/llama DLL beside the renamed one"
  ok "installer holds uninstall.exe, studio-worker.exe and the runtime DLLs (7z l)"
else
  echo "package-check: note: 7z not installed (Debian p7zip-full); the archive listing is skipped, the Wine install below checks the files"
fi

# Debian's wine64 alone (no recommends) has no wine/wineserver on PATH:
# fall back to its loader and server in /usr/lib/wine.
WINE="$(command -v wine || command -v wine64 || true)"
[ -n "$WINE" ] || { [ -x /usr/lib/wine/wine64 ] && WINE=/usr/lib/wine/wine64; } || fail "wine not found (Debian: apt-get install wine64 wine)"
WINESERVER="$(command -v wineserver || true)"
[ -n "$WINESERVER" ] || { [ -x /usr/lib/wine/wineserver ] && WINESERVER=/usr/lib/wine/wineserver; } || fail "wineserver not found (Debian: wine64)"
wineserver() { "$WINESERVER" "$@"; }
winepath() { "$WINE" winepath "$@"; }
export WINEPREFIX="$work/wineprefix" WINEDEBUG=-all WINEARCH=win64
# Wine hands the Linux environment to Windows programs: the Makefile's
# STUDIO_WORKER_*_LIB (source-tree Linux runtimes) would point the installed
# program away from its own lib\ folder, which is what this check is about.
unset STUDIO_WORKER_SD_LIB STUDIO_WORKER_LLAMA_LIB
# No Mono/Gecko prompts, and no Linux menu entries made for Windows shortcuts.
export WINEDLLOVERRIDES="mscoree=d;mshtml=d;winemenubuilder.exe=d"
mkdir -p "$WINEPREFIX"
"$WINE" wineboot -i >/dev/null 2>&1 || true
wineserver -w
winvar() { "$WINE" cmd /c "echo %$1%" 2>/dev/null | tr -d '\r'; }
unixpath() { winepath -u "$1" 2>/dev/null | tr -d '\r'; }
lad_w="$(winvar LOCALAPPDATA)"; ad_w="$(winvar APPDATA)"; up_w="$(winvar USERPROFILE)"
lad="$(unixpath "$lad_w")"; ad="$(unixpath "$ad_w")"; up="$(unixpath "$up_w")"
[ -d "$lad" ] && [ -d "$ad" ] || fail "could not find the Wine user's folders ($lad_w -> $lad)"
inst="$lad/Programs/StudioWorker"; inst_w="$lad_w\\Programs\\StudioWorker"
lnk="$ad/Microsoft/Windows/Start Menu/Programs/Studio Worker.lnk"
ukey='HKCU\Software\Microsoft\Windows\CurrentVersion\Uninstall\StudioWorker'
runkey='HKCU\Software\Microsoft\Windows\CurrentVersion\Run'

# The donor's data, where the app keeps it on Windows (xdg: %LOCALAPPDATA%),
# plus %APPDATA% and a models folder, to prove the uninstaller leaves them.
mkdir -p "$lad/studio-worker" "$ad/studio-worker" "$up/models/tiny"
echo 'studio_url = "https://studio.minis.gg/"' >"$lad/studio-worker/settings.toml"
echo 'kept' >"$ad/studio-worker/note.txt"
echo 'weights' >"$up/models/tiny/model.gguf"

same_tree() { # installed lib vs staged runtime and sd DLL: same names, same bytes
  local have="$1"; shift
  diff <(cd "$have" && find . -type f -exec sha256sum {} + | sort -k2) \
    <(for d in "$@"; do (cd "$d" && find . -type f -exec sha256sum {} +); done | sort -k2) >/dev/null
}
run_dllcheck() {
  mkdir -p "$work/dllcheck"
  x86_64-w64-mingw32-gcc -O2 -municode -o "$work/dllcheck/dllcheck.exe" packaging/windows/dllcheck.c -lpsapi
  out="$("$WINE" "$work/dllcheck/dllcheck.exe" "$inst_w\\lib" 2>&1)" || fail "the installed runtime does not load under Wine: $out"
  grep -q 'ggml modules loaded: 1' <<<"$out" || fail "dllcheck: $out"
}

"$WINE" "$setup" /S; wineserver -w
for f in studio-worker.exe studio-worker.ico uninstall.exe lib/llama.dll lib/ggml.dll lib/ggml-base.dll lib/libstable-diffusion.dll; do
  [ -f "$inst/$f" ] || fail "silent install: no $inst/$f"
done
same_tree "$inst/lib" "$dist/.work/windows/rt/win-x64" "$dist/.work/windows/sd" || fail "silent install: lib\\ differs from the staged CPU runtime"
cmp -s "$inst/studio-worker.exe" "$dist/.work/windows-bin/studio-worker.exe" 2>/dev/null || [ ! -f "$dist/.work/windows-bin/studio-worker.exe" ] ||
  fail "silent install: studio-worker.exe differs from the one built"
ok "silent install (/S): program, icon, uninstaller, CPU runtime byte-equal to the staged one in $inst_w"
if command -v 7z >/dev/null; then
  res="$(7z l -ba "$inst/studio-worker.exe")"
  for r in .rsrc/GROUP_ICON/1 .rsrc/MANIFEST/1 .rsrc/version.txt; do
    grep -q " $r\$" <<<"$res" || fail "studio-worker.exe has no $r resource (icon, DPI manifest, version)"
  done
  ok "studio-worker.exe carries its icon, DPI-aware manifest and version resource"
fi
[ -f "$lnk" ] || fail "no Start-menu shortcut at $lnk"
grep -qa 'studio-worker.exe' "$lnk" || strings -el "$lnk" | grep -q 'studio-worker.exe' || fail "the shortcut does not point at studio-worker.exe"
ok "Start-menu shortcut: Studio Worker.lnk -> studio-worker.exe"
reg="$("$WINE" reg query "$ukey" 2>/dev/null | tr -d '\r')" || fail "no uninstall entry $ukey"
grep -q "DisplayName.*Studio Worker" <<<"$reg" && grep -q "DisplayVersion.*$version" <<<"$reg" &&
  grep -qi 'UninstallString.*uninstall.exe' <<<"$reg" || fail "uninstall entry incomplete: $reg"
ok "Apps & features entry: $(grep -E 'DisplayName|DisplayVersion' <<<"$reg" | xargs)"
"$WINE" reg query "$runkey" /v "Studio Worker" >/dev/null 2>&1 && fail "start at login was set without being chosen"
run_dllcheck
ok "installed CPU runtime loads under Wine with one ggml: $(grep -E '^  device' <<<"$out" | head -1 | xargs)"

check_wine_program
check_wine_presence
check_wine_gpuwatch
check_wine_window

phase "Windows installer: over a running program, Vulkan, uninstall"
# Installing over a running Studio Worker must stop, not half-replace it:
# a stand-in program runs as studio-worker.exe while the installer runs.
# It writes a marker once running, so the check waits for that, not a guess.
cat >"$work/sleeper.c" <<'C'
#include <stdio.h>
#include <windows.h>
int main(int argc, char **argv) {
    FILE *f = fopen(argv[1], "w");
    if (f) { fputs("running", f); fclose(f); }
    Sleep(120000);
    return 0;
}
C
x86_64-w64-mingw32-gcc -o "$work/sleeper.exe" "$work/sleeper.c"
cp "$work/sleeper.exe" "$inst/studio-worker.exe"
rm -f "$work/sleeper.started"
"$WINE" "$inst/studio-worker.exe" "$(winepath -w "$work/sleeper.started" 2>/dev/null | tr -d '\r')" &
sleeper=$!
for _ in $(seq 100); do [ -f "$work/sleeper.started" ] && break; sleep 0.2; done
[ -f "$work/sleeper.started" ] || fail "the stand-in program did not start under Wine"
rc=0; "$WINE" "$setup" /S || rc=$?
[ "$rc" = 2 ] || fail "installing over a running Studio Worker exited $rc, want 2 (quit it first)"
cmp -s "$inst/studio-worker.exe" "$work/sleeper.exe" || fail "the installer replaced a running studio-worker.exe"
kill "$sleeper" 2>/dev/null || true; wineserver -k 2>/dev/null || true; wineserver -w
ok "installing over a running Studio Worker stops with exit code 2 and leaves it alone"

"$WINE" "$setup" /S /RUNTIME=vulkan /AUTOSTART; wineserver -w
"$WINE" reg query "$runkey" /v "Studio Worker" 2>/dev/null | tr -d '\r' | grep -qi 'studio-worker.exe' || fail "/AUTOSTART did not set HKCU Run"
run_dllcheck
if [ -d "$dist/.work/windows/rt/win-x64-vulkan" ]; then
  same_tree "$inst/lib" "$dist/.work/windows/rt/win-x64-vulkan" "$dist/.work/windows/sd" || fail "/RUNTIME=vulkan: lib\\ is not exactly the Vulkan runtime"
  ok "reinstall with /RUNTIME=vulkan /AUTOSTART: lib\\ replaced by the Vulkan runtime (loads, one ggml), HKCU Run set"
else
  # The default installer carries the CPU runtime alone (the app fetches
  # the GPU one as a runtime pack): a GPU choice installs the CPU runtime.
  same_tree "$inst/lib" "$dist/.work/windows/rt/win-x64" "$dist/.work/windows/sd" || fail "/RUNTIME=vulkan on the CPU-only installer: lib\\ is not exactly the CPU runtime"
  ok "reinstall with /RUNTIME=vulkan /AUTOSTART on the CPU-only installer: lib\\ is the CPU runtime (loads, one ggml; the app fetches the Vulkan one), HKCU Run set"
fi

# Runtime packs the app fetched (engine/packs: %LOCALAPPDATA%\studio-worker\runtimes)
# are the program's, not the donor's: the uninstaller removes them.
mkdir -p "$lad/studio-worker/runtimes/llama/win-x64-vulkan/v0.4.0"
echo 'a fetched pack' >"$lad/studio-worker/runtimes/llama/win-x64-vulkan/v0.4.0/ggml-vulkan.dll"
"$WINE" "$inst/uninstall.exe" /S; wineserver -w
[ ! -e "$lad/studio-worker/runtimes" ] || fail "the uninstaller left the fetched runtime packs in $lad_w\\studio-worker\\runtimes"
[ ! -e "$inst" ] || fail "the uninstaller left $inst: $(ls -A "$inst")"
[ ! -e "$lnk" ] || fail "the uninstaller left the shortcut"
"$WINE" reg query "$ukey" >/dev/null 2>&1 && fail "the uninstaller left the Apps & features entry"
"$WINE" reg query "$runkey" /v "Studio Worker" >/dev/null 2>&1 && fail "the uninstaller left the start-at-login entry"
[ -f "$lad/studio-worker/settings.toml" ] && [ -f "$ad/studio-worker/note.txt" ] && [ -f "$up/models/tiny/model.gguf" ] ||
  fail "the uninstaller removed the donor's settings or models"
ok "silent uninstall: program, shortcut, uninstall entry, login start and fetched runtime packs gone; settings and models kept"
wineserver -k 2>/dev/null || true
rm -rf "$work/wineprefix"
}

check_bad_runtime() {
phase "bad input: a runtime file that does not match the manifest"
# 1. A fetched runtime changed on disk before packaging: pkgtool refuses it.
bad="$work/bad/linux-x64"; mkdir -p "$bad"
cp -a runtime/llama/linux-x64/. "$bad/"
printf '\x00' | dd of="$bad/libllama.v0.5.0.so" bs=1 seek=4096 conv=notrunc status=none
if out="$("$dist/.work/pkgtool" stage -variant linux-x64 -src "$bad" -out "$work/bad/out" 2>&1)"; then
  fail "pkgtool staged a corrupted runtime"
fi
grep -q 'libllama.v0.5.0.so does not match the manifest.*refusing to package it' <<<"$out" || fail "unclear refusal: $out"
[ ! -e "$work/bad/out" ] || fail "a refused runtime left an output folder"
ok "corrupted runtime file refused: ${out#pkgtool: }"
# 2. The npm package itself differs from the pinned sha256: the fetch stops.
mkdir -p "$work/bad/pkg"
cp packaging/fetch-runtime.sh "$work/bad/pkg/"
sed '0,/"name": "libggml-base.so", "sha256": "[0-9a-f]*"/s//"name": "libggml-base.so", "sha256": "'"$(printf '0%.0s' {1..64})"'"/' \
  packaging/runtimes.json >"$work/bad/pkg/runtimes.json"
if out="$("$work/bad/pkg/fetch-runtime.sh" linux-x64 "$work/bad/rt" 2>&1)"; then
  fail "fetch-runtime.sh installed a package that does not match the manifest"
fi
grep -q 'libggml-base.so: sha256 mismatch.*refusing to install it' <<<"$out" || fail "unclear refusal: $out"
[ ! -e "$work/bad/rt/linux-x64" ] || fail "a refused package was installed"
ok "npm package not matching the pinned sha256 refused: $(tail -1 <<<"$out")"
# 3. The stable-diffusion.cpp build differs from its pinned sha256, or is
# missing: make runtime's install stops and installs nothing.
mkdir -p "$work/bad/sdsrc/sd/linux-x64"
cp runtime/sd/linux-x64/libstable-diffusion.so "$work/bad/sdsrc/sd/linux-x64/"
printf 'x' >>"$work/bad/sdsrc/sd/linux-x64/libstable-diffusion.so"
if out="$(SD_RUNTIME_SRC="$work/bad/sdsrc" packaging/install-sd-runtime.sh sd-linux-x64 "$work/bad/sdrt" 2>&1)"; then
  fail "install-sd-runtime.sh installed a library that does not match the manifest"
fi
grep -q 'libstable-diffusion.so: sha256 mismatch.*refusing to install it' <<<"$out" || fail "unclear refusal: $out"
[ ! -e "$work/bad/sdrt/linux-x64" ] || fail "a refused stable-diffusion.cpp library was installed"
rm "$work/bad/sdsrc/sd/linux-x64/libstable-diffusion.so"
if out="$(SD_RUNTIME_SRC="$work/bad/sdsrc" packaging/install-sd-runtime.sh sd-linux-x64 "$work/bad/sdrt" 2>&1)"; then
  fail "install-sd-runtime.sh succeeded without the library"
fi
grep -q 'libstable-diffusion.so is missing' <<<"$out" || fail "unclear refusal: $out"
ok "stable-diffusion.cpp library altered or missing: refused ($(tail -1 <<<"$out" | cut -c1-100))"
rm -rf "$work/bad"
}

case "$only" in
  all) check_bad_runtime; check_deb; check_tarball; check_windows ;;
  linux) check_bad_runtime; check_deb; check_tarball ;;
  windows) check_windows ;;
  *) fail "CHECK_ONLY must be all, linux or windows" ;;
esac

phase "sizes"
for f in "$deb" "$vdeb" "$tarball" "$setup"; do
  printf 'package-check: %-48s %10s bytes (%s)\n' "${f#"$root/"}" "$(stat -c %s "$f")" "$(du -h "$f" | cut -f1)"
done
echo "package-check: checks took $((SECONDS - t0)) s"
echo "package-check: $pass passed, 0 failed"
