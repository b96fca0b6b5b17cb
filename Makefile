BUN ?= ./node_modules/.bin/bun
TSC ?= ./node_modules/.bin/tsc
BIOME ?= ./node_modules/.bin/biome
SRC := $(shell find src -name '*.ts' -o -name '*.js' -o -name '*.html' -o -name '*.css') package.json

.PHONY: all setup build build-arm64 check format test demo bench fuzz clean

all: build

# Debian packages (rsync, serf) and npm packages (Bun pinned): everything a fresh machine lacks.
setup:
	scripts/setup.sh

node_modules/.bin/bun: package.json package-lock.json
	scripts/setup.sh
	@touch $@

# ESM with code splitting: each command and the deploy pipeline are chunks of their own (embedded in
# the executable), loaded at their first import(), so `--version` and the agent's `[]` load only what
# they use. A single CommonJS bundle loads the bytecode of everything at start (~9 ms more).
BUILD_FLAGS := --compile --minify --bytecode --format=esm --splitting --no-compile-autoload-dotenv --no-compile-autoload-bunfig
# The same flags without the commit define below: scripts/build-baseline.sh adds its commit's.
COMPILE_FLAGS := $(BUILD_FLAGS)

dist/pulldeploy: node_modules/.bin/bun $(SRC) Makefile
	$(BUN) build src/main.ts $(BUILD_FLAGS) --outfile dist/pulldeploy

build: dist/pulldeploy

# Cross-build for linux-arm64 offline: the npm registry's @oven/bun-linux-aarch64 (same Bun version)
# is the runtime embedded into the executable.
BUN_VERSION := $(shell node -p "require('./package.json').devDependencies.bun")
.cache/bun-linux-aarch64-$(BUN_VERSION)/bin/bun:
	mkdir -p .cache/bun-linux-aarch64-$(BUN_VERSION)
	cd .cache && npm pack --silent @oven/bun-linux-aarch64@$(BUN_VERSION) >/dev/null
	tar xzf .cache/oven-bun-linux-aarch64-$(BUN_VERSION).tgz -C .cache/bun-linux-aarch64-$(BUN_VERSION) --strip-components=1
	rm .cache/oven-bun-linux-aarch64-$(BUN_VERSION).tgz

dist/pulldeploy-linux-arm64: node_modules/.bin/bun .cache/bun-linux-aarch64-$(BUN_VERSION)/bin/bun $(SRC)
	$(BUN) build src/main.ts $(BUILD_FLAGS) --target=bun-linux-arm64 \
	  --compile-executable-path .cache/bun-linux-aarch64-$(BUN_VERSION)/bin/bun --outfile $@

build-arm64: dist/pulldeploy-linux-arm64

# The commit `--version` prints, baked in at build time (scripts/commit-id.sh: HEAD's short hash,
# `-dirty`, or "unknown" outside a git clone). dist/.commit changes only when it does, so a new
# commit rebuilds the executables and nothing else makes them stale.
BUILD_COMMIT := $(shell scripts/commit-id.sh)
BUILD_FLAGS += --define 'PULLDEPLOY_COMMIT="$(BUILD_COMMIT)"'
# package.json's version too, so that src/main.ts answers `--version` without importing anything
# (scripts/build-baseline.sh defines its commit's in the same way).
APP_VERSION := $(shell node -p "require('./package.json').version")
BUILD_FLAGS += --define 'PULLDEPLOY_VERSION="$(APP_VERSION)"'
dist/.commit: FORCE
	@mkdir -p dist; [ "$$(cat $@ 2>/dev/null)" = "$(BUILD_COMMIT)" ] || echo "$(BUILD_COMMIT)" >$@
dist/pulldeploy dist/pulldeploy-linux-arm64: dist/.commit
FORCE:

# Release packages (issue 12), in dist/release/: for linux x64 and arm64 a tar.gz and a .deb
# (dpkg-deb), and SHA256SUMS. The version is package.json's. `make test` builds them once, for
# test/e2e/package.test.ts.
dist/release/SHA256SUMS: dist/pulldeploy dist/pulldeploy-linux-arm64 scripts/package.sh $(wildcard packaging/* packaging/deb/* examples/*) README.md
	scripts/package.sh dist/release dist/pulldeploy:x64 dist/pulldeploy-linux-arm64:arm64

.PHONY: dist FORCE
dist: dist/release/SHA256SUMS
test: dist

# Types (the second run checks the dashboard's browser script, page.js, with the DOM's types), then
# Biome: the formatter's output and the linter's rules (biome.json), changing nothing (`make format`
# rewrites the files).
check: node_modules/.bin/bun
	$(TSC) --noEmit -p .
	$(TSC) --noEmit -p src/fleet/dashboard
	$(BIOME) ci .

format: node_modules/.bin/bun
	$(BIOME) check --write .

demo: setup build
	scripts/demo.sh

test: setup build check
	@mkdir -p test-artifacts
	$(BUN) test --timeout 60000 --reporter=junit --reporter-outfile=test-artifacts/junit.xml $(TESTS) ; status=$$?; \
	  bun_summary=$$(node scripts/junit-summary.mjs test-artifacts/junit.xml); echo "$$bun_summary"; exit $$status

# Benchmarks (floors of issues 2, 3, 5 and 11): all three scripts run, and make fails if any does.
# BENCH_ARGS goes to all (--files, --size-mb, --big-gb, --reps, --seed; bench-delta ignores --big-gb),
# BENCH_AGENT_ARGS, BENCH_PUBLISH_ARGS and BENCH_DELTA_ARGS to one (--work, --fs, --agents, --big-mb…),
# e.g. make bench BENCH_ARGS="--files 2000 --size-mb 24 --big-gb 0".
# BENCH_BASELINE=<commit> builds that commit's executable with the same flags (scripts/build-baseline.sh:
# a git worktree in a temp dir, kept in .bench/baseline/) and both scripts time it beside this one
# (--baseline-bin: issue 8's ≤ 1.05× lines), and scripts/bench-releases.ts (BENCH_RELEASES_ARGS) times the release
# strategy with keep_releases releases kept against it, e.g. make bench BENCH_BASELINE=386a006.
bench: setup build
	status=0; baseline=""; \
	  if [ -n "$(BENCH_BASELINE)" ]; then baseline=$$(scripts/build-baseline.sh '$(BENCH_BASELINE)' $(COMPILE_FLAGS)) || exit 1; fi; \
	  $(BUN) scripts/bench-agent.ts $(BENCH_ARGS) $${baseline:+--baseline-bin "$$baseline"} $(BENCH_AGENT_ARGS) || status=$$?; \
	  $(BUN) scripts/bench-publish.ts $(BENCH_ARGS) $${baseline:+--baseline-bin "$$baseline"} $(BENCH_PUBLISH_ARGS) || status=$$?; \
	  $(BUN) scripts/bench-delta.ts $(BENCH_ARGS) $(BENCH_DELTA_ARGS) || status=$$?; \
	  if [ -n "$$baseline" ]; then $(BUN) scripts/bench-releases.ts --baseline-bin "$$baseline" $(BENCH_RELEASES_ARGS) || status=$$?; fi; \
	  exit $$status

# The archive and manifest fuzzers (test/fuzz) beyond make test's fixed 300 cases: FUZZ_RUNS cases
# (default 5000) of FUZZ_SEED (default random, printed); FUZZ_CASE=i replays one case.
fuzz: node_modules/.bin/bun
	$(BUN) scripts/fuzz.ts

clean:
	rm -rf dist test-artifacts
