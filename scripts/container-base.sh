#!/usr/bin/env bash
# Makes a stand-in for the Dockerfile's base image (node:20-bookworm-slim) on a machine that cannot
# reach a container registry: Debian bookworm (debootstrap --variant=minbase) + this machine's `node`
# and npm in /usr/local, a `node` user (uid 1000), imported with `podman import` under the base
# image's name, so the Dockerfile stays exactly what a user builds. Needs root, podman and debootstrap.
#
#   scripts/container-base.sh [IMAGE]      # default node:20-bookworm-slim
#
# Nothing is done when IMAGE already exists and is not an older stand-in (a real pulled image is
# never replaced). The debootstrap tree is cached as a tarball in $PNEUMOLENS_CACHE (default
# ~/.cache/pneumolens), so a second machine state without the podman image skips the download.
# Environment: DEBIAN_MIRROR (default http://deb.debian.org/debian).
set -euo pipefail

image="${1:-node:20-bookworm-slim}"
node_bin="$(command -v node)"
node_version="$("$node_bin" --version)"
npm_dir="$(cd "$(dirname "$(readlink -f "$(command -v npm)")")/.." && pwd)"
label=pneumolens.standin.node

if podman image exists "$image"; then
  have="$(podman image inspect --format "{{ index .Labels \"$label\" }}" "$image" 2>/dev/null || true)"
  if [ -z "$have" ] || [ "$have" = "<no value>" ]; then
    echo "container-base: $image exists and is not a stand-in; using it as it is"
    exit 0
  fi
  if [ "$have" = "$node_version" ]; then
    echo "container-base: stand-in $image (node $node_version) exists"
    exit 0
  fi
fi

case "$node_version" in
  v20.*) ;;
  *) echo "container-base: warning: host node is $node_version, the Dockerfile's base has Node 20" >&2 ;;
esac

cache="${PNEUMOLENS_CACHE:-$HOME/.cache/pneumolens}"
rootfs_tar="$cache/bookworm-minbase.tar"
work="$(mktemp -d /tmp/pneumolens-base.XXXXXX)"
trap 'rm -rf "$work"' EXIT
root="$work/root"
mkdir -p "$root" "$cache"

started=$SECONDS
if [ -s "$rootfs_tar" ]; then
  echo "container-base: bookworm minbase from cache $rootfs_tar"
  tar -C "$root" -xf "$rootfs_tar"
else
  echo "container-base: debootstrap --variant=minbase bookworm (about a minute)"
  debootstrap --variant=minbase bookworm "$root" "${DEBIAN_MIRROR:-http://deb.debian.org/debian}" >"$work/debootstrap.log" 2>&1 ||
    {
      tail -20 "$work/debootstrap.log" >&2
      exit 1
    }
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  tar -C "$root" -cf "$rootfs_tar.part" . && mv "$rootfs_tar.part" "$rootfs_tar"
fi

# What node:20-bookworm-slim adds to Debian: node and npm in /usr/local, and the `node` user.
install -m 0755 "$node_bin" "$root/usr/local/bin/node"
mkdir -p "$root/usr/local/lib/node_modules"
cp -a "$npm_dir" "$root/usr/local/lib/node_modules/npm"
ln -sf ../lib/node_modules/npm/bin/npm-cli.js "$root/usr/local/bin/npm"
ln -sf ../lib/node_modules/npm/bin/npx-cli.js "$root/usr/local/bin/npx"
chroot "$root" groupadd --gid 1000 node
chroot "$root" useradd --uid 1000 --gid node --shell /bin/bash --create-home node

tar -C "$root" -c . | podman import \
  --change "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
  --change "ENV NODE_VERSION=${node_version#v}" \
  --change "LABEL $label=$node_version" \
  --change 'CMD ["node"]' \
  - "$image" >/dev/null
echo "container-base: imported $image (node $node_version) in $((SECONDS - started)) s"
