#!/usr/bin/env bash
# Builds the kubectl-appquota plugin for every platform of the krew manifest
# (hack/krew/appquota.yaml) into dist/: one archive per platform,
# kubectl-appquota_<os>_<arch>.tar.gz, holding exactly the files the
# manifest's `files` entries name (the static binary, CGO_ENABLED=0, and the
# repository's LICENSE and README.md; a missing one fails the build, since
# krew would refuse the archive); dist/sha256sums.txt; and dist/appquota.yaml,
# the manifest with the version, the download URL and each archive's sha256
# filled in. `make plugin` runs it.
#
#   PLUGIN_VERSION    the version, a semantic version with a leading v as krew
#                     requires (default: git describe of the latest v* tag,
#                     else v0.0.0-dev.g<commit>)
#   PLUGIN_URL_BASE   where the archives will be downloaded from
#                     (default: the GitHub release of PLUGIN_VERSION)
#   PLUGIN_PLATFORMS  os/arch pairs to build (default: the manifest's four);
#                     dist/appquota.yaml is written only when all four are built
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
template=hack/krew/appquota.yaml
if [[ -n ${PLUGIN_VERSION:-} ]]; then
	version=$PLUGIN_VERSION
elif ! version=$(git describe --tags --match 'v[0-9]*' --dirty 2>/dev/null); then
	# No release tag yet: a pre-release of v0.0.0 that names the commit (the
	# g keeps the identifier alphanumeric, as semver wants of one with
	# letters and digits).
	version=v0.0.0-dev.g$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
	if [[ -n $(git status --porcelain --untracked-files=no 2>/dev/null) ]]; then
		version+=.dirty
	fi
fi
semver='^v(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(-[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?(\+[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?$'
if ! [[ $version =~ $semver ]]; then
	echo "build-plugin.sh: version $version is not a semantic version with a leading v (krew requires one): set PLUGIN_VERSION" >&2
	exit 1
fi
url_base=${PLUGIN_URL_BASE:-https://github.com/appquota/appquota/releases/download/$version}
read -r -a platforms <<<"${PLUGIN_PLATFORMS:-linux/amd64 linux/arm64 darwin/amd64 darwin/arm64}"
# What every archive holds: the manifest's `from` entries (the same for every
# platform), in a fixed order.
mapfile -t files < <(sed -n 's/^ *- {from: \([^,]*\), to: .*/\1/p' "$template" | LC_ALL=C sort -u)
if [[ ! " ${files[*]} " =~ " kubectl-appquota " ]]; then
	echo "build-plugin.sh: $template installs no kubectl-appquota binary (files: ${files[*]:-none})" >&2
	exit 1
fi
for f in "${files[@]}"; do
	if [[ $f != kubectl-appquota && ! -f $f ]]; then
		echo "build-plugin.sh: $template installs $f from each archive, and the repository has no $f" >&2
		exit 1
	fi
done

rm -rf dist
mkdir -p dist
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
# The template's comments name the placeholders: leave them out.
manifest=$(sed -e '/^#/d' -e "s|VERSION|$version|g" -e "s|URL_BASE|$url_base|g" "$template")
for platform in "${platforms[@]}"; do
	os=${platform%/*} arch=${platform#*/}
	name=kubectl-appquota_${os}_${arch}
	dir=$stage/$name
	mkdir -p "$dir"
	echo "building $name" >&2
	CGO_ENABLED=0 GOOS=$os GOARCH=$arch go build -trimpath -ldflags "-s -w" -o "$dir/kubectl-appquota" ./cmd/kubectl-appquota
	for f in "${files[@]}"; do
		if [[ $f != kubectl-appquota ]]; then cp "$f" "$dir/"; fi
	done
	# The same bytes for the same sources: the files in a fixed order, fixed
	# owner and time, no timestamp in the gzip header.
	tar --owner=0 --group=0 --numeric-owner --mtime=@0 -C "$dir" -cf - "${files[@]}" | gzip -n >"dist/$name.tar.gz"
	sum=$(sha256sum "dist/$name.tar.gz" | cut -d' ' -f1)
	echo "$sum  $name.tar.gz" >>dist/sha256sums.txt
	manifest=${manifest//SHA256_${os}_${arch}/$sum}
done
if grep -q 'SHA256_' <<<"$manifest"; then
	echo "build-plugin.sh: not every platform of $template was built (PLUGIN_PLATFORMS): no dist/appquota.yaml" >&2
else
	printf '%s\n' "$manifest" >dist/appquota.yaml
fi
echo "dist/ ($version): $(ls dist | tr '\n' ' ')" >&2
