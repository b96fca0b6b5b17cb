#!/bin/sh
# Build the executable of another commit, for a benchmark that times it beside this checkout's
# (`make bench BENCH_BASELINE=<commit>`, bench-agent's --baseline-bin):
#
#   scripts/build-baseline.sh COMMIT FLAG...     # FLAG...: the bun build flags (the Makefile's)
#
# prints the executable's path, .bench/baseline/<full hash>-<cksum of the flags>/pulldeploy (kept: a
# second run with the same commit and flags reuses it).
# The commit is checked out with `git worktree add` into a temp dir and node_modules is copied there
# (cp -a), never symlinked: setup.sh or `npm ci` run through a symlink would empty this checkout's.
# Nothing runs in the worktree but this checkout's bun.
set -eu
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { echo "usage: scripts/build-baseline.sh COMMIT FLAG..." >&2; exit 2; }
commit=$(git rev-parse --verify --quiet "$1^{commit}") || { echo "build-baseline: '$1' is not a commit of this clone; give a hash or a ref (e.g. 386a006)" >&2; exit 2; }
shift
short=$(git rev-parse --short "$commit")
out="$(pwd)/.bench/baseline/$commit-$(printf '%s\n' "$@" | cksum | cut -d' ' -f1)/pulldeploy"
if [ -x "$out" ]; then echo "$out"; exit 0; fi
bun="$(pwd)/node_modules/.bin/bun"
tmp=$(mktemp -d)
trap 'git worktree remove --force "$tmp/src" >/dev/null 2>&1 || true; rm -rf "$tmp"; git worktree prune' EXIT
echo "build-baseline: building $short in $tmp/src" >&2
git worktree add --quiet --detach "$tmp/src" "$commit" >&2
cp -a node_modules "$tmp/src/node_modules"
mkdir -p "$(dirname "$out")"
# The commit's package.json version, as the Makefile defines it (none if it has no version).
version=$(cd "$tmp/src" && "$bun" -e 'try { console.log(require("./package.json").version ?? "") } catch { console.log("") }')
(cd "$tmp/src" && "$bun" build src/main.ts "$@" --define "PULLDEPLOY_COMMIT=\"$short\"" \
  ${version:+--define "PULLDEPLOY_VERSION=\"$version\""} --outfile "$out.tmp") >&2
mv "$out.tmp" "$out"
echo "$out"
