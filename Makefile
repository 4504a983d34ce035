# Studio Worker — every everyday task is one target here. See README.md.
SHELL := /bin/bash
GO ?= go
BIN := bin/studio-worker
RUNTIME_DIR ?= $(CURDIR)/runtime/llama/linux-x64
export STUDIO_WORKER_LLAMA_LIB ?= $(RUNTIME_DIR)

.PHONY: all build run test bench demo runtime vet fmt-check package-linux package-windows package-macos package-check clean

all: build

build:
	$(GO) build -o $(BIN) .

# The llama.cpp runtime libraries (npm package, unpacked into runtime/; never committed).
runtime:
	./packaging/fetch-runtime.sh linux-x64 runtime/llama

# A newcomer's first look: the desktop app against a dev studio on loopback
# that approves it and feeds it demo jobs.
run: runtime build
	./$(BIN)

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

test: runtime fmt-check vet
	$(GO) test -race -count=1 ./...

bench: runtime
	$(GO) test -run '^$$' -bench . -benchmem ./...

demo: runtime build
	./$(BIN) demo

clean:
	rm -rf bin dist
