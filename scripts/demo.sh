#!/usr/bin/env bash
# A real local deploy, end to end, with nothing but this machine: build the binary, pack a sample
# app with tar, serve it over loopback HTTP, `echo URL | pulldeploy agent`, and show the result.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$PWD/dist/pulldeploy
WORK=$(mktemp -d /tmp/pulldeploy-demo.XXXXXX)
SERVER_PID=""
cleanup() { [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null; true; }
trap cleanup EXIT

echo "== 1. a sample app"
mkdir -p "$WORK/app/public" "$WORK/app/bin"
echo "<h1>hello from pulldeploy</h1>" > "$WORK/app/public/index.html"
printf '#!/bin/sh\necho "app v1 running"\n' > "$WORK/app/bin/start" && chmod 755 "$WORK/app/bin/start"
mkdir -p "$WORK/store"
tar czf "$WORK/store/app.tar.gz" -C "$WORK/app" .
SUM=$(sha256sum "$WORK/store/app.tar.gz" | cut -d' ' -f1)

echo "== 2. serve it on loopback"
PORT_FILE="$WORK/port"
./node_modules/.bin/bun -e "
const s = Bun.serve({ port: 0, hostname: '127.0.0.1', fetch: (r) => new Response(Bun.file('$WORK/store' + new URL(r.url).pathname)) });
await Bun.write('$PORT_FILE', String(s.port));
" &
SERVER_PID=$!
for _ in $(seq 100); do [ -s "$PORT_FILE" ] && break; sleep 0.05; done
URL="http://127.0.0.1:$(cat "$PORT_FILE")"
cat > "$WORK/store/app.yml" <<YAML
src: $URL/app.tar.gz
checksum: $SUM
dest: $WORK/srv/app
commands:
  pre: ["mkdir -p $WORK/srv"]
  post: ["$WORK/srv/app/bin/start"]
  success: ["echo deployed > $WORK/srv/DEPLOYED"]
YAML
echo "manifest: $URL/app.yml"
cat "$WORK/store/app.yml" | sed 's/^/    /'

echo "== 3. echo $URL/app.yml | pulldeploy agent"
echo "$URL/app.yml" | "$BIN" agent

echo "== 4. the result"
find "$WORK/srv" | sort | sed "s|$WORK|\$WORK|"
echo "index.html: $(cat "$WORK/srv/app/public/index.html")"
echo "work dir: $WORK (remove it when done)"
