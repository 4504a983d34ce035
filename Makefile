# Studio Worker — every everyday task is one target here. See README.md.
SHELL := /bin/bash
GO ?= go
BIN := bin/studio-worker
RUNTIME_DIR ?= $(CURDIR)/runtime/llama/linux-x64
export STUDIO_WORKER_LLAMA_LIB ?= $(RUNTIME_DIR)
SD_RUNTIME_DIR ?= $(CURDIR)/runtime/sd/linux-x64
export STUDIO_WORKER_SD_LIB ?= $(SD_RUNTIME_DIR)/libstable-diffusion.so

.PHONY: all deps build run test unit-test gui-check bench demo runtime vet fmt-check package-linux package-windows package-macos package-check package-clean-install clean feed

all: build

# Debian packages the build and tests need (installed only when missing).
deps:
	./scripts/deps.sh test

build:
	$(GO) build -o $(BIN) .

# The llama.cpp runtime libraries (npm package, unpacked into runtime/; never
# committed) and the stable-diffusion.cpp library (from ../shared/runtimes, or
# SD_RUNTIME_SRC), each checked against its sha256 in packaging/runtimes.json.
runtime:
	./packaging/fetch-runtime.sh linux-x64 runtime/llama
	./packaging/install-sd-runtime.sh sd-linux-x64 runtime/sd

# A newcomer's first look: the desktop app against a dev studio on loopback
# that approves it and feeds it demo jobs.
run:
	./scripts/deps.sh run
	$(MAKE) runtime build
	./$(BIN) --dev-studio --demo-over 1m

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

# build before unit-test: the update test links real builds of the app and
# reuses its build cache (a cold cgo build inside a test would take minutes).
test: deps runtime fmt-check vet build unit-test gui-check

unit-test:
	$(GO) test -race -count=1 ./...

# The real window under Xvfb, the tray over D-Bus, demo jobs through llama.cpp.
# GUI_SHOTS=1 refreshes docs/screenshots/; GUI_IDLE=60 measures idle CPU/RSS.
GUI_SHOTS ?= 0
GUI_IDLE ?= 0
gui-check: build runtime
	SHOTS=$(GUI_SHOTS) IDLE_SECONDS=$(GUI_IDLE) ./app/testdata/gui-check.sh $(BIN)

# Every benchmark; each figure also comes out as one `ratio <name> <value>`
# line, measured against its baseline in the same run.
bench: runtime
	set -o pipefail; $(GO) test -run '^$$' -bench . -benchmem ./... | awk -f scripts/bench-ratios.awk

# Real chat and image jobs through a dev studio on loopback; the studio's
# state and the images it received stay in .cache/demo/.
demo: runtime build
	./$(BIN) demo --dir $(CURDIR)/.cache/demo

clean:
	rm -rf bin dist

# ---- packaging (packaging/README in the main README) -------------------------
# One version for the binary, the installers' names and agentVersion:
# studio.Version (kept equal to FyneApp.toml by a test); override with PKG_VERSION=.
PKG_VERSION ?= $(shell sed -n 's/^var Version = "\(.*\)"$$/\1/p' studio/version.go)
# -s -w: no symbol table or DWARF in shipped binaries (stack traces still work).
PKG_LDFLAGS := -s -w -X github.com/minisgg/studio-worker/studio.Version=$(PKG_VERSION)
PKG_WORK := dist/.work
PKG_TOOL := $(PKG_WORK)/pkgtool
PKG_NFPM := .cache/tools/nfpm
PKG_NFPM_VERSION := v2.45.2
# llama.cpp runtimes the Windows installer carries: the CPU one alone; the app
# fetches the Vulkan or CUDA one for the PC's GPU as a runtime pack (engine/packs).
# "win-x64 win-x64-vulkan win-x64-cuda" makes the offline installer with all three.
PKG_WIN_VARIANTS ?= win-x64
PKG_WIN_CC ?= x86_64-w64-mingw32-gcc

.PHONY: package-tools
package-tools:
	@mkdir -p $(PKG_WORK)
	$(GO) build -o $(PKG_TOOL) ./packaging/pkgtool
	@test -x $(PKG_NFPM) || { echo "building nfpm $(PKG_NFPM_VERSION) into $(PKG_NFPM)"; GOBIN=$(CURDIR)/.cache/tools nice $(GO) install github.com/goreleaser/nfpm/v2/cmd/nfpm@$(PKG_NFPM_VERSION); }

# Linux: .deb (+ Vulkan add-on .deb) and .tar.xz in dist/. Same compile flags as
# `make build`, so a warm build cache makes this take seconds.
package-linux: package-tools
	nice $(GO) build -ldflags "$(PKG_LDFLAGS)" -o $(PKG_WORK)/linux-bin/studio-worker .
	NFPM=$(CURDIR)/$(PKG_NFPM) PKGTOOL=$(CURDIR)/$(PKG_TOOL) ./packaging/linux/build.sh $(PKG_WORK)/linux-bin/studio-worker $(PKG_VERSION)

# Windows: cross-compiled with mingw-w64, wrapped by NSIS into
# dist/StudioWorker-Setup-<version>.exe.
package-windows: package-tools
	PKGTOOL=$(CURDIR)/$(PKG_TOOL) ./packaging/windows/resources.sh $(PKG_VERSION) $(PKG_WORK)/windows-rsrc
	CGO_ENABLED=1 GOOS=windows GOARCH=amd64 CC=$(PKG_WIN_CC) nice $(GO) build -ldflags "-H windowsgui -linkmode=external -extldflags $(CURDIR)/$(PKG_WORK)/windows-rsrc/rsrc.o $(PKG_LDFLAGS)" -o $(PKG_WORK)/windows-bin/studio-worker.exe .
	PKGTOOL=$(CURDIR)/$(PKG_TOOL) WIN_VARIANTS="$(PKG_WIN_VARIANTS)" ./packaging/windows/build.sh $(PKG_WORK)/windows-bin/studio-worker.exe $(PKG_VERSION)

# macOS: "Studio Worker.app" and a .dmg with the Metal runtime. Needs a Mac.
package-macos:
	@if [ "$$(uname -s)" != Darwin ]; then echo "package-macos needs macOS (Xcode command-line tools, hdiutil, iconutil); on Linux use .github/workflows/macos.yml on a macOS runner"; exit 2; fi
	$(GO) build -o $(PKG_WORK)/pkgtool ./packaging/pkgtool
	CGO_ENABLED=1 $(GO) build -ldflags "$(PKG_LDFLAGS)" -o $(PKG_WORK)/macos-bin/studio-worker .
	PKGTOOL=$(CURDIR)/$(PKG_TOOL) ./packaging/macos/build.sh $(PKG_WORK)/macos-bin/studio-worker $(PKG_VERSION)

# Builds both installers once, then installs, runs and removes them for real
# (.deb with apt-get, the Windows installer under Wine).
package-check: package-linux package-windows
	PKG_VERSION=$(PKG_VERSION) ./packaging/check.sh

# The .deb on a clean, minimal Debian 12 (debootstrap): installs from its
# declared dependencies alone, runs real demo jobs, and removes cleanly.
package-clean-install: package-linux
	./packaging/clean-install-check.sh dist/studio-worker_$(PKG_VERSION)_amd64.deb

# ---- the signed release feed (README: "Releases and the signed feed") -------
# dist/feed/: feed.json (signed with FEED_KEY), the installers make package-*
# left in dist/, and one archive per runtime pack (llama.cpp variants fetched
# with npm, stable-diffusion.cpp from ../shared/runtimes); a pack whose files
# are not on this machine is left out with a line. Upload dist/feed/ as a
# whole to FEED_BASE_URL. FEED_FETCH=0 uses only the runtimes already here.
FEED_KEY ?= $(HOME)/.config/studio-worker-release/feed-ed25519.key
FEED_BASE_URL ?= https://studio.minis.gg/releases
FEED_FETCH ?= 1
FEED_LLAMA_VARIANTS ?= linux-x64 linux-x64-vulkan linux-x64-cuda win-x64 win-x64-vulkan win-x64-cuda mac-arm64-metal
FEED_SD_VARIANTS ?= sd-linux-x64 sd-win-x64
feed:
	@test -f "$(FEED_KEY)" || { echo "make feed: no signing key at $(FEED_KEY). The maintainers hold the release key: make feed FEED_KEY=<file>. A new key (fork or rotation): go run ./packaging/pkgtool feed-keygen -out <file outside the repository>, then put its public key in release/keys.go"; exit 2; }
	@mkdir -p $(PKG_WORK)
	$(GO) build -o $(PKG_TOOL) ./packaging/pkgtool
	@if [ "$(FEED_FETCH)" = 1 ]; then \
	  for v in $(FEED_LLAMA_VARIANTS); do nice ./packaging/fetch-runtime.sh $$v runtime/llama || echo "make feed: could not fetch $$v; its pack is left out"; done; \
	  for v in $(FEED_SD_VARIANTS); do ./packaging/install-sd-runtime.sh $$v runtime/sd || echo "make feed: no $$v here; its pack is left out"; done; \
	fi
	nice $(PKG_TOOL) feed -base-url "$(FEED_BASE_URL)" -key "$(FEED_KEY)" -dist dist -out dist/feed -llama-runtimes runtime/llama -sd-runtimes runtime/sd
