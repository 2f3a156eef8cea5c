# The README's two commands: `make demo` (a whole job on the embedded default)
# and `make test` (everything CI runs). `make bench` measures speed.
GO      ?= go
BIN     := bin
PKGS    := ./...
BENCHOUT ?= bench-results

.PHONY: all build test test-deps vet layering demo bench soak clean

all: build

build:
	$(GO) build -o $(BIN)/ ./cmd/...

# test-deps installs what the tests talk to when missing: moto (a local
# AWS), versitygw (an S3 server that checks signatures), xz and zstd,
# Azurite (the Azure Storage emulator, npm), PostgreSQL (the job store's
# tests run initdb and postgres on loopback).
test-deps:
	@scripts/ensure-test-deps.sh
	@scripts/ensure-s3-test-server.sh
	@scripts/ensure-azurite.sh
	@scripts/ensure-postgres.sh

STATICCHECK_VERSION := v0.8.2

vet:
	$(GO) vet $(PKGS)
	$(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) $(PKGS)
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$unformatted" ]; then echo "gofmt would change: $$unformatted"; exit 1; fi

# The daemon reaches targets only through the uploader process: it must not
# link a target or a cloud SDK.
layering:
	@bad=$$($(GO) list -deps ./cmd/cloudupload-server ./backend/... ./xmlapi/... | grep -E 'aws-sdk-go|azure-sdk-for-go|/targets' || true); \
	  if [ -n "$$bad" ]; then echo "the daemon must not import targets or cloud SDKs:"; echo "$$bad"; exit 1; fi

test: test-deps build vet layering
	$(GO) test -race -count=1 -timeout 25m $(PKGS)

demo:
	@scripts/demo.sh

# soak: the crash test, longer than in make test (SEED=N for another schedule).
soak: test-deps
	$(GO) test -count=1 -timeout 30m -run '^TestCrash$$' -v ./cmd/cloudupload-server \
		-crash.jobs=$${JOBS:-100} -crash.kills=$${KILLS:-30} -crash.seed=$${SEED:-7}

bench: build
	@scripts/bench.sh $(BENCHOUT)

clean:
	rm -rf $(BIN) demo $(BENCHOUT)
