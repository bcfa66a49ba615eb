# keygate — make demo | make test | make bench
SWIFT ?= swift
APT_PACKAGES := libssl-dev libmaxminddb-dev libhiredis-dev libyaml-dev redis-server pkg-config curl python3 openssl ca-certificates chromium chromium-driver
BENCH_PACKAGES := nginx libnginx-mod-http-geoip2 wrk slowhttptest valgrind
PYTEST := python3 -m pytest

.PHONY: fuzz soak conformance deps bench-deps apt build release test unit integration demo bench fuzz clean screenshots

# Installs what is missing (Debian); a no-op when everything is there.
deps:
	@$(MAKE) --no-print-directory apt PACKAGES="$(APT_PACKAGES)"
	@python3 -c "import pytest" 2>/dev/null || python3 -m pip install -q pytest || python3 -m pip install -q --break-system-packages pytest
	@python3 -c "import yaml" 2>/dev/null || python3 -m pip install -q pyyaml || python3 -m pip install -q --break-system-packages pyyaml
	@python3 -c "import selenium" 2>/dev/null || python3 -m pip install -q selenium || python3 -m pip install -q --break-system-packages selenium

bench-deps:
	@$(MAKE) --no-print-directory apt PACKAGES="$(APT_PACKAGES) $(BENCH_PACKAGES)"

apt:
	@missing=""; for p in $(PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

build: deps
	$(SWIFT) build

# Linked like the image in deploy/Dockerfile (the Swift runtime and FoundationEssentials inside the binary):
# what is measured is what ships, and it starts with less memory than the shared libraries take.
release: deps
	$(SWIFT) build -c release --static-swift-stdlib

unit: build
	$(SWIFT) test

integration: build
	KEYGATE_BIN=$(CURDIR)/.build/debug/keygate $(PYTEST) -q tests/integration

test: unit integration

demo: release
	.build/release/keygate demo

bench: bench-deps release
	bash bench/run.sh

# Refreshes the console screenshots in docs/ (the browser test takes them on every run).
screenshots: build
	KEYGATE_BIN=$(CURDIR)/.build/debug/keygate KEYGATE_SCREENSHOTS=$(CURDIR)/docs $(PYTEST) -q tests/integration/test_console_browser.py

clean:
	rm -rf .build run bench-out

# libFuzzer, FUZZ_SECONDS each (default 600): the request parser and chunked decoder, upstream
# answers through the response relay and WebSocket frame boundaries, each also split into reads
# (the outcome must not depend on the split); then the files others write: key-store lines,
# usage-log lines, the policy, the key-state file and the usage rollups (each must write out and
# read back the same); and the forwarding headers of trusted proxies. New inputs that reach new code go to
# fuzz/findings*, outside git; the committed corpus folders are the seeds.
# Swift's own crash backtracer is off so that libFuzzer reports a crash and saves its input at once.
FUZZ_SECONDS ?= 600
FUZZ_FLAGS := -Xswiftc -sanitize=fuzzer,address -Xswiftc -DKEYGATE_FUZZ
fuzz: deps
	$(SWIFT) build --product KeygateFuzz --scratch-path .build-fuzz $(FUZZ_FLAGS)
	$(SWIFT) build --product KeygateFuzzFiles --scratch-path .build-fuzz $(FUZZ_FLAGS)
	mkdir -p fuzz/findings
	cp -n fuzz/corpus/* fuzz/findings/ 2>/dev/null || true
	SWIFT_BACKTRACE=enable=no .build-fuzz/debug/KeygateFuzz -max_total_time=$(FUZZ_SECONDS) -max_len=4096 -artifact_prefix=fuzz/crash- fuzz/findings fuzz/corpus
	for t in record usage policy state rollups forwarded; do \
	  mkdir -p fuzz/findings-$$t; \
	  SWIFT_BACKTRACE=enable=no KEYGATE_FUZZ_TARGET=$$t .build-fuzz/debug/KeygateFuzzFiles -max_total_time=$(FUZZ_SECONDS) -max_len=4096 \
	    -artifact_prefix=fuzz/crash-$$t- fuzz/findings-$$t fuzz/corpus-$$t || exit 1; \
	done

# The HTTP fixtures against keygate and against nginx as a plain reverse proxy.
conformance: bench-deps build
	KEYGATE_BIN=$(CURDIR)/.build/debug/keygate python3 bench/conformance.py

# Ten minutes of mixed traffic with reloads and upstream restarts (SOAK_SECONDS, default 600).
SOAK_SECONDS ?= 600
soak: bench-deps release
	KEYGATE_BIN=$(CURDIR)/.build/release/keygate python3 bench/soak.py $(SOAK_SECONDS)
