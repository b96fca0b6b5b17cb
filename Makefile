BUN ?= ./node_modules/.bin/bun
TSC ?= ./node_modules/.bin/tsc
SRC := $(shell find src -name '*.ts') package.json

.PHONY: all build build-arm64 check test unit demo bench clean

all: build

node_modules/.bin/bun: package.json package-lock.json
	npm ci --no-audit --no-fund
	@touch $@

dist/pulldeploy: node_modules/.bin/bun $(SRC)
	$(BUN) build src/cli.ts --compile --minify --bytecode --outfile dist/pulldeploy

build: dist/pulldeploy

check: node_modules/.bin/bun
	$(TSC) --noEmit -p .

test: build check
	@mkdir -p test-artifacts
	$(BUN) test --timeout 60000 --reporter=junit --reporter-outfile=test-artifacts/junit.xml $(TESTS) ; status=$$?; \
	  bun_summary=$$(node scripts/junit-summary.mjs test-artifacts/junit.xml); echo "$$bun_summary"; exit $$status

clean:
	rm -rf dist test-artifacts
