#!/usr/bin/env bash
# A real local deploy, end to end, with nothing but this machine (no cloud account, no Consul):
#   1. `pulldeploy publish` packs a sample app into a local file:// store (archive + manifest),
#   2. `pulldeploy agent` deploys it (sync_strategy: release: releases/<id>, `current` symlink),
#   3. a second release is published and deployed (unchanged files hard-linked, not rewritten),
#   4. `pulldeploy rollback --dest` switches back to the first one with no download.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$PWD/dist/pulldeploy
WORK=$(mktemp -d /tmp/pulldeploy-demo.XXXXXX)
export PULLDEPLOY_STATE_DIR=$WORK/state # the agent's state and lock (default /var/lib/pulldeploy)
DEST=$WORK/srv/app
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "1. a sample app, and hooks in a stretcher-style manifest"
mkdir -p "$WORK/app/public" "$WORK/app/bin"
echo "<h1>hello from pulldeploy, v1</h1>" > "$WORK/app/public/index.html"
head -c 200000 /dev/urandom > "$WORK/app/public/logo.bin"
printf '#!/bin/sh\necho "app running: $(cat %s/current/public/index.html)"\n' "$DEST" > "$WORK/app/bin/start"
chmod 755 "$WORK/app/bin/start"
cat > "$WORK/hooks.yml" <<YAML
commands:
  pre: ["echo pre: release \$PULLDEPLOY_RELEASE_ID"]
  post: ["$DEST/current/bin/start"]
  success: ["echo deployed > $WORK/DEPLOYED"]
YAML
sed 's/^/    /' "$WORK/hooks.yml"

step "2. pulldeploy publish (to a local file:// store; --no-kv --no-event: no Consul here)"
V1=$("$BIN" publish "$WORK/app" --to "file://$WORK/store" --role demo --dest "$DEST" \
  --sync-strategy release --manifest "$WORK/hooks.yml" --no-kv --no-event -m "first release")
echo "manifest: $V1"
sed 's/^/    /' "${V1#file://}"

step "3. echo MANIFEST_URL | pulldeploy agent"
echo "$V1" | "$BIN" agent

step "4. a second release: index.html changed, logo.bin not"
echo "<h1>hello from pulldeploy, v2</h1>" > "$WORK/app/public/index.html"
sleep 1 # a new second: release ids are timestamped
V2=$("$BIN" publish "$WORK/app" --to "file://$WORK/store" --role demo --dest "$DEST" \
  --sync-strategy release --manifest "$WORK/hooks.yml" --no-kv --no-event -q)
"$BIN" agent --manifest "$V2"

step "5. the result"
ls -l "$DEST" | sed 's/^/    /'
echo "current → $(readlink "$DEST/current")"
echo "index.html: $(cat "$DEST/current/public/index.html")"
echo "logo.bin inodes (one file, hard-linked between releases): $(stat -c %i "$DEST"/releases/*/public/logo.bin | sort -u | tr '\n' ' ')"

step "6. pulldeploy rollback --dest (no download)"
"$BIN" rollback --dest "$DEST" --list
"$BIN" rollback --dest "$DEST"
echo "index.html: $(cat "$DEST/current/public/index.html")"
echo
echo "work dir: $WORK (remove it when done)"
