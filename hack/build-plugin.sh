#!/usr/bin/env bash
# Builds the kubectl-appquota plugin for every platform of the krew manifest
# (hack/krew/appquota.yaml) into dist/: one archive per platform,
# kubectl-appquota_<os>_<arch>.tar.gz, holding the static binary (CGO_ENABLED=0)
# and the repository's LICENSE and README.md when present; dist/sha256sums.txt;
# and dist/appquota.yaml, the manifest with the version, the download URL and
# each archive's sha256 filled in. `make plugin` runs it.
#
#   PLUGIN_VERSION    the version (default: git describe, else v0.0.0-dev)
#   PLUGIN_URL_BASE   where the archives will be downloaded from
#                     (default: the GitHub release of PLUGIN_VERSION)
#   PLUGIN_PLATFORMS  os/arch pairs to build (default: the manifest's four);
#                     dist/appquota.yaml is written only when all four are built
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
version=${PLUGIN_VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo v0.0.0-dev)}
url_base=${PLUGIN_URL_BASE:-https://github.com/appquota/appquota/releases/download/$version}
read -r -a platforms <<<"${PLUGIN_PLATFORMS:-linux/amd64 linux/arm64 darwin/amd64 darwin/arm64}"

rm -rf dist
mkdir -p dist
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
# The template's comments name the placeholders: leave them out.
manifest=$(sed -e '/^#/d' -e "s|VERSION|$version|g" -e "s|URL_BASE|$url_base|g" hack/krew/appquota.yaml)
for platform in "${platforms[@]}"; do
	os=${platform%/*} arch=${platform#*/}
	name=kubectl-appquota_${os}_${arch}
	dir=$stage/$name
	mkdir -p "$dir"
	echo "building $name" >&2
	CGO_ENABLED=0 GOOS=$os GOARCH=$arch go build -trimpath -ldflags "-s -w" -o "$dir/kubectl-appquota" ./cmd/kubectl-appquota
	for f in LICENSE README.md; do
		if [[ -f $f ]]; then cp "$f" "$dir/"; fi
	done
	# The same bytes for the same sources: sorted names, fixed owner and time,
	# no timestamp in the gzip header.
	tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -C "$dir" -cf - . | gzip -n >"dist/$name.tar.gz"
	sum=$(sha256sum "dist/$name.tar.gz" | cut -d' ' -f1)
	echo "$sum  $name.tar.gz" >>dist/sha256sums.txt
	manifest=${manifest//SHA256_${os}_${arch}/$sum}
done
if grep -q 'SHA256_' <<<"$manifest"; then
	echo "build-plugin.sh: not every platform of hack/krew/appquota.yaml was built (PLUGIN_PLATFORMS): no dist/appquota.yaml" >&2
else
	printf '%s\n' "$manifest" >dist/appquota.yaml
fi
echo "dist/: $(ls dist | tr '\n' ' ')" >&2
