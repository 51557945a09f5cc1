#!/usr/bin/env bash
# Print the path of a pinned helm, building it first if it is not cached yet.
#
#   helm="$(scripts/ensure-helm.sh)" && "$helm" lint --strict deploy/helm/gridflex
#
# helm is built from source with `go install`, which fetches it through the Go module proxy
# (proxy.golang.org): no release tarball to download, and the version is pinned here, so every
# machine lints and renders the chart with the same helm. The binary is cached outside the repo,
# one directory per version; the first build takes a few minutes, later calls return at once.
# Progress and errors go to stderr; stdout is only the path.
set -euo pipefail

HELM_VERSION="v3.21.4"
HELM_MODULE="helm.sh/helm/v3"

cache_dir="${XDG_CACHE_HOME:-$HOME/.cache}/gridflex/tools/helm-${HELM_VERSION}"
helm_bin="${cache_dir}/helm"

if [[ -x "$helm_bin" ]]; then
    echo "$helm_bin"
    exit 0
fi

if ! command -v go >/dev/null 2>&1; then
    echo "ensure-helm: 'go' is not on PATH; helm ${HELM_VERSION} is built from source with it." >&2
    echo "ensure-helm: install Go >= 1.22 (https://go.dev/dl/) or run: apt-get install golang-go" >&2
    exit 1
fi

# helm's go.mod asks for a newer Go than many distributions ship: GOTOOLCHAIN=auto lets an older
# go (>= 1.21) fetch the toolchain it needs from the same proxy, unless the caller chose otherwise.
export GOTOOLCHAIN="${GOTOOLCHAIN:-auto}"

echo "ensure-helm: building helm ${HELM_VERSION} into ${cache_dir} (first time only, a few minutes)" >&2
mkdir -p "$cache_dir"
# Build in a temporary directory and move the binary in last, so an interrupted build never
# leaves a half-written binary that the check above would trust.
build_dir="$(mktemp -d "${cache_dir}/build.XXXXXX")"
trap 'rm -rf "$build_dir"' EXIT
# Run go outside any module or workspace the caller may be in: only the pinned release counts.
cd "$build_dir"
export GOWORK=off

# The Kubernetes version helm assumes when no cluster is asked (`helm template`, and the API
# deprecation checks of `helm lint`) is set at link time; without it helm says v1.20 and lint
# never flags an API removed since. helm's Makefile derives it from the k8s.io/client-go it
# builds against (v0.36 -> 1.36); do the same from the pinned release's go.mod.
go_mod="$(go mod download -json "${HELM_MODULE}@${HELM_VERSION}" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",*$/\1/p')"
client_go="$(awk '$1 == "k8s.io/client-go" { print $2 }' "$go_mod")"
if [[ ! "$client_go" =~ ^v0\.([0-9]+)\. ]]; then
    echo "ensure-helm: no k8s.io/client-go version in ${HELM_MODULE}@${HELM_VERSION}'s go.mod (${go_mod})" >&2
    exit 1
fi
kube_minor="${BASH_REMATCH[1]}"

ldflags="-s -w -X ${HELM_MODULE}/internal/version.version=${HELM_VERSION}"
for package in pkg/lint/rules pkg/chartutil; do
    ldflags+=" -X ${HELM_MODULE}/${package}.k8sVersionMajor=1 -X ${HELM_MODULE}/${package}.k8sVersionMinor=${kube_minor}"
done

GOBIN="$build_dir" CGO_ENABLED=0 go install -trimpath -ldflags "$ldflags" "${HELM_MODULE}/cmd/helm@${HELM_VERSION}" >&2

mv "$build_dir/helm" "$helm_bin"
echo "$helm_bin"
