#!/usr/bin/env bash
# Builds a Docker image with Python and the AWS Batch clients' own packages (Metaflow, Snakemake
# and its AWS plugins, boto3, the AWS CLI), for the client runs in docs/clients.md:
#
#   scripts/clients/python-image.sh VENV [IMAGE]
#
# No image registry is reachable here, so the image is made with `docker import` from this
# host's files: the interpreter VENV was made from, VENV itself (at the same paths, since a venv
# names its interpreter by path), bash, busybox's applets for the shell tools, and every shared
# library those need (found with ldd). IMAGE defaults to flotilla-clients/python:latest.
set -euo pipefail

VENV=$(realpath "${1:?usage: python-image.sh VENV [IMAGE]}")
IMAGE=${2:-flotilla-clients/python:latest}
PY=$(realpath "$VENV/bin/python")
PREFIX=$(dirname "$(dirname "$PY")")

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT

copy() { # copy PATH into the root at the same path, keeping symlinks
  local p
  for p in "$@"; do
    mkdir -p "$root$(dirname "$p")"
    cp -a "$p" "$root$(dirname "$p")/"
  done
}

mkdir -p "$root"/{bin,tmp,etc,root,usr/bin}
chmod 1777 "$root/tmp"
copy "$PREFIX" "$VENV" /bin/bash /bin/busybox
for applet in $(/bin/busybox --list); do
  [[ -e $root/bin/$applet ]] || ln -s busybox "$root/bin/$applet"
done
ln -sf /bin/bash "$root/bin/sh"
ln -sf "$VENV/bin/python" "$root/usr/bin/python"
ln -sf "$VENV/bin/python" "$root/usr/bin/python3"
cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ca-certificates.crt" 2>/dev/null || true
printf 'root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/bin/sh\n' >"$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"

# The shared libraries of every ELF file copied.
find "$root" -type f \( -name '*.so*' -o -perm -u+x \) -print0 \
  | { xargs -0 -r ldd 2>/dev/null || true; } | awk '/=> \//{print $3} /^[ \t]*\/lib/{print $1}' | sort -u \
  | while read -r lib; do
      # Dereferenced, at the path the loader asks for: the host's /lib and /lib64 are symlinks
      # into /usr, which the image does not repeat.
      [[ -e $root$lib ]] || { mkdir -p "$root$(dirname "$lib")"; cp -L "$lib" "$root$lib"; }
    done

tar -C "$root" -c . | docker import \
  --change "ENV PATH=$VENV/bin:/usr/bin:/bin" \
  --change "ENV METAFLOW_SKIP_INSTALL_DEPENDENCIES=1" \
  - "$IMAGE" >/dev/null
echo "$IMAGE"
