#!/bin/sh
# The commit an executable is built from, for `pulldeploy --version`: HEAD's short hash, with
# `-dirty` when tracked files differ from it; "unknown" when this tree is not the top of a git clone
# (a source tarball: a git repository around it must not lend it its own commit).
cd "$(dirname "$0")/.." || exit 1
top=$(git rev-parse --show-toplevel 2>/dev/null) || top=""
if [ -z "$top" ] || [ "$(cd "$top" && pwd -P)" != "$(pwd -P)" ]; then
  echo unknown
  exit 0
fi
commit=$(git rev-parse --short HEAD 2>/dev/null) || { echo unknown; exit 0; }
git update-index -q --refresh >/dev/null 2>&1
git diff-index --quiet HEAD -- 2>/dev/null || commit="$commit-dirty"
echo "$commit"
