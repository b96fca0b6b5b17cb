#!/usr/bin/env bash
# `make dist`: the release packages from the executables `make build` and `make build-arm64` made.
#   scripts/package.sh OUTDIR BINARY:ARCH...        (ARCH: x64 or arm64)
# For each binary, in OUTDIR: pulldeploy-<version>-linux-<arch>.tar.gz (the binary, README.md, the
# example configs, LICENSE if the project has one) and pulldeploy_<version>_<debarch>.deb; then
# SHA256SUMS (`sha256sum -c SHA256SUMS` checks them). The version is package.json's.
#
# Every entry is owned by root:root with no group/world write bit: a root install or a `tar x` as
# root must not leave files that the build user's uid (or anyone) could replace under a binary root
# runs. /etc/default/pulldeploy, which may hold Consul settings, is 0600.
# Reproducible: entries sorted, mtimes SOURCE_DATE_EPOCH (the commit's time), gzip -n.
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "package: $*" >&2; exit 1; }
[ $# -ge 2 ] || die "usage: scripts/package.sh OUTDIR BINARY:ARCH... (ARCH: x64 or arm64)"
out=$1
shift
command -v dpkg-deb >/dev/null || die "dpkg-deb is missing: install dpkg (Debian's own package tool)"

version=$(node -p "require('./package.json').version")
[[ $version =~ ^[0-9]+\.[0-9]+\.[0-9]+([-+][0-9A-Za-z.+-]+)?$ ]] ||
  die "package.json: version \"$version\" is not semver (x.y.z[-pre][+build]): fix it there"
# This tree's own clone, if it is one (as scripts/commit-id.sh decides): an enclosing repository's
# tags and dates are not this tree's.
own_clone=false
[ "$(git rev-parse --show-toplevel 2>/dev/null)" = "$(pwd -P)" ] && own_clone=true
# A release tag must say the same as package.json, the one place the version is set.
if $own_clone && tags=$(git tag --points-at HEAD 'v*') && [ -n "$tags" ]; then
  for t in $tags; do
    [ "$t" = "v$version" ] || die "HEAD is tagged $t but package.json says $version: set package.json's version to ${t#v}"
  done
fi
# Debian orders `~` before anything: 1.0.0-rc.1 (semver pre-release) becomes 1.0.0~rc.1 < 1.0.0.
deb_version=${version/-/\~}

if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
  if $own_clone; then SOURCE_DATE_EPOCH=$(git log -1 --format=%ct); else SOURCE_DATE_EPOCH=$(stat -c %Y package.json); fi
fi
export SOURCE_DATE_EPOCH
export TZ=UTC LC_ALL=C
umask 022

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$out"
out=$(cd "$out" && pwd)

# A tar.gz of NAME (a directory inside DIR), the same bytes every time.
repro_tar() { # OUT.tar.gz DIR NAME
  find "$2" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
  tar --sort=name --format=gnu --owner=0 --group=0 --numeric-owner --mtime="@$SOURCE_DATE_EPOCH" \
    -C "$2" -cf - "$3" | gzip -6 -n >"$1.tmp"
  mv "$1.tmp" "$1"
}

package() { # BINARY ARCH
  local bin=$1 arch=$2 machine deb_arch
  case $arch in
    x64) machine=62 deb_arch=amd64 ;;
    arm64) machine=183 deb_arch=arm64 ;;
    *) die "$bin: unknown arch \"$arch\" (x64 or arm64)" ;;
  esac
  [ -f "$bin" ] || die "$bin is missing: run make build (x64) or make build-arm64"
  # The ELF header's e_machine (bytes 18-19): never ship one arch's binary under the other's name.
  local got
  got=$(od -An -tu2 -j18 -N2 "$bin" | tr -d ' ')
  [ "$(head -c4 "$bin" | od -An -c | tr -d ' ')" = '177ELF' ] && [ "$got" = "$machine" ] ||
    die "$bin is not a linux-$arch executable (ELF e_machine $got, expected $machine)"

  local name=pulldeploy-$version-linux-$arch
  local t=$work/tar-$arch/$name
  install -d -m 0755 "$t" "$t/examples"
  install -m 0755 "$bin" "$t/pulldeploy"
  install -m 0644 README.md "$t/README.md"
  [ ! -f LICENSE ] || install -m 0644 LICENSE "$t/LICENSE"
  for f in examples/*; do
    install -m "$([ -x "$f" ] && echo 0755 || echo 0644)" "$f" "$t/examples/"
  done
  repro_tar "$out/$name.tar.gz" "$work/tar-$arch" "$name"

  local d=$work/deb-$arch
  install -d -m 0755 "$d" "$d/DEBIAN" "$d/usr/bin" "$d/usr/lib/systemd/system" "$d/etc/default" "$d/usr/share/doc/pulldeploy"
  install -m 0755 "$bin" "$d/usr/bin/pulldeploy"
  install -m 0644 packaging/pulldeploy-follow.service "$d/usr/lib/systemd/system/"
  install -m 0600 packaging/default "$d/etc/default/pulldeploy"
  install -m 0644 README.md "$d/usr/share/doc/pulldeploy/README.md"
  [ ! -f LICENSE ] || install -m 0644 LICENSE "$d/usr/share/doc/pulldeploy/copyright"
  # The watch for the Consul agent's configuration, with the packaged binary's path.
  {
    sed 's#/usr/local/bin/pulldeploy#/usr/bin/pulldeploy#g' examples/consul-watch.hcl
    printf '%s\n' "" "# The same watch from a shell (stretcher's handler line):" \
      "#   consul watch -type event -name deploy /usr/bin/pulldeploy agent --role web --retry 3"
  } >"$d/usr/share/doc/pulldeploy/consul-watch.hcl"
  chmod 0644 "$d/usr/share/doc/pulldeploy/consul-watch.hcl"
  install -m 0755 packaging/deb/postinst packaging/deb/prerm packaging/deb/postrm "$d/DEBIAN/"
  echo /etc/default/pulldeploy >"$d/DEBIAN/conffiles"
  local glibc size
  glibc=$(readelf -V "$bin" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -Vu | tail -n1)
  [ -n "$glibc" ] || die "$bin: no GLIBC symbol versions found (readelf -V): is it a Bun executable?"
  size=$(du -sk --apparent-size --exclude=DEBIAN "$d" | cut -f1)
  cat >"$d/DEBIAN/control" <<EOF
Package: pulldeploy
Version: $deb_version
Architecture: $deb_arch
Maintainer: pulldeploy maintainers <maintainers@users.noreply.r-seed-46d98e20.example>
Installed-Size: $size
Depends: libc6 (>= $glibc), rsync, tar
Section: admin
Priority: optional
Description: pull-based deploys for fleets of servers
 One executable: a stretcher-compatible agent (run by consul watch, a Serf
 event handler, at boot or as the pulldeploy-follow service, disabled until
 configured in /etc/default/pulldeploy) and a publisher. The agent verifies
 each release's checksum (and signature, with --trust-key) before running
 its hooks and syncing it into place.
EOF
  find "$d" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
  dpkg-deb --root-owner-group -Zgzip -z6 --build "$d" "$out/pulldeploy_${deb_version}_$deb_arch.deb.tmp" >/dev/null
  mv "$out/pulldeploy_${deb_version}_$deb_arch.deb.tmp" "$out/pulldeploy_${deb_version}_$deb_arch.deb"
  echo "$name.tar.gz" >"$work/files-$arch"
  echo "pulldeploy_${deb_version}_$deb_arch.deb" >>"$work/files-$arch"
}

# One job per arch (each is mostly gzip): both cores when there are two.
pids=()
for spec in "$@"; do
  package "${spec%:*}" "${spec##*:}" &
  pids+=($!)
done
for pid in "${pids[@]}"; do
  wait "$pid" || { kill "${pids[@]}" 2>/dev/null; wait; exit 1; }
done

cd "$out"
cat "$work"/files-* | sort | xargs sha256sum >SHA256SUMS.tmp
mv SHA256SUMS.tmp SHA256SUMS
echo "package: in $out: $(cut -d' ' -f3 SHA256SUMS | tr '\n' ' ')SHA256SUMS"
