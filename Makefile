BUN ?= ./node_modules/.bin/bun
TSC ?= ./node_modules/.bin/tsc
SRC := $(shell find src -name '*.ts') package.json

.PHONY: all setup build build-arm64 check test demo bench clean

all: build

# Debian packages (rsync, serf) and npm packages (Bun pinned): everything a fresh machine lacks.
setup:
	scripts/setup.sh

node_modules/.bin/bun: package.json package-lock.json
	scripts/setup.sh
	@touch $@

dist/pulldeploy: node_modules/.bin/bun $(SRC)
	$(BUN) build src/cli.ts --compile --minify --bytecode --outfile dist/pulldeploy

build: dist/pulldeploy

check: node_modules/.bin/bun
	$(TSC) --noEmit -p .

demo: setup build
	scripts/demo.sh

test: setup build check
	@mkdir -p test-artifacts
	$(BUN) test --timeout 60000 --reporter=junit --reporter-outfile=test-artifacts/junit.xml $(TESTS) ; status=$$?; \
	  bun_summary=$$(node scripts/junit-summary.mjs test-artifacts/junit.xml); echo "$$bun_summary"; exit $$status

clean:
	rm -rf dist test-artifacts
