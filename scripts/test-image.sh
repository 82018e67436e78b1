#!/usr/bin/env bash
# Builds the tiny local Docker image the Docker-runtime tests run: flotilla-test/busybox:latest.
#
#   scripts/test-image.sh
#
# No container registry is reachable here, so the image is made with `docker import` from a
# tarball holding Debian's statically linked busybox (package busybox-static, installed with
# apt-get when /bin/busybox is missing) and a few applet symlinks. Idempotent: does nothing when
# the image already exists.
set -euo pipefail

IMAGE=${FLOTILLA_TEST_IMAGE:-flotilla-test/busybox:latest}

say() { printf '==> %s\n' "$*" >&2; }
die() { printf '==> ERROR: %s\n' "$*" >&2; exit 1; }

command -v docker >/dev/null 2>&1 || die "docker CLI not found"
docker info >/dev/null 2>&1 || die "Docker daemon not reachable"

if docker image inspect "$IMAGE" >/dev/null 2>&1; then
  say "$IMAGE: present"
  exit 0
fi

as_root() {
  if [[ $(id -u) -eq 0 ]]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo "$@"
  else die "need root (or sudo) to run: $*"
  fi
}

BUSYBOX=/bin/busybox
# Only a static build works in an otherwise empty image: a dynamic busybox needs libc there.
is_static() { [[ -x $BUSYBOX ]] && ! ldd "$BUSYBOX" >/dev/null 2>&1; }
if ! is_static; then
  say "installing busybox-static"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends busybox-static </dev/null
fi
is_static || die "$BUSYBOX is missing or not static after installing busybox-static"

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/bin" "$root/tmp" "$root/etc"
chmod 1777 "$root/tmp"
cp "$BUSYBOX" "$root/bin/busybox"
# printenv is not built into Debian's busybox-static; `env` prints the environment. `exit` and
# `trap` are shell builtins.
for applet in sh echo sleep true false env cat kill seq ls head tail wc yes printf grep tr; do
  ln -s busybox "$root/bin/$applet"
done
# Some tools print user names; give root one.
echo 'root:x:0:0:root:/tmp:/bin/sh' >"$root/etc/passwd"
echo 'root:x:0:' >"$root/etc/group"

say "docker import -> $IMAGE"
tar -C "$root" -c . | docker import --change 'ENV PATH=/bin' --change 'CMD ["/bin/sh"]' - "$IMAGE" >/dev/null
docker image inspect "$IMAGE" >/dev/null
say "$IMAGE: built"
