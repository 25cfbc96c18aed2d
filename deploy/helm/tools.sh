#!/usr/bin/env bash
# The Helm chart's tools, cached outside the clone (`make install` calls `install`):
#   helm v3.22.0, `go install`ed from the Go module proxy     → $CACHE/go/bin/helm
#   the strict checker built from deploy/helm/checker          → $CACHE/go/bin/freshrec-helm-checker-<hash>
# where <hash> covers the checker's go.mod, go.sum and sources, so an edit rebuilds it and an
# unchanged checkout (CI) reuses it. Needs Go >= 1.26 (`go` on PATH or /usr/local/go/bin/go).
#
#   tools.sh [install]   install what is missing or stale (quiet when everything is current)
#   tools.sh paths       print `helm <path>` and `checker <path>` (installs nothing)
#   tools.sh check       render the chart with values.yaml and values-production.yaml and
#                        check every rendered object strictly (what `make chart` runs)
set -euo pipefail

HELM_VERSION=v3.22.0
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CHART="$HERE/freshrec"
CHECKER_SRC="$HERE/checker"
CACHE="${FRESHREC_CACHE_DIR:-$HOME/.cache/freshrec}"
GOBIN_DIR="$CACHE/go/bin"
export GOPATH="$CACHE/go/path" GOBIN="$GOBIN_DIR"
# the go.mod files name the Go they need; use the local toolchain rather than downloading one
export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"

say() { echo "[helm-tools] $*" >&2; }

go_bin() {
  if command -v go >/dev/null; then command -v go
  elif [ -x /usr/local/go/bin/go ]; then echo /usr/local/go/bin/go
  else
    say "Go >= 1.26 is needed to install helm and build the chart checker:"
    say "  download it from https://go.dev/dl/ and unpack it into /usr/local (PATH: /usr/local/go/bin)"
    exit 1
  fi
}

checker_hash() {
  (cd "$CHECKER_SRC" && cat go.mod go.sum $(ls ./*.go | LC_ALL=C sort)) | sha256sum | cut -c1-16
}

helm_path() { echo "$GOBIN_DIR/helm"; }
checker_path() { echo "$GOBIN_DIR/freshrec-helm-checker-$(checker_hash)"; }

# the Kubernetes version the checker's API types describe (k8s.io/api v0.N.M → v1.N.M): the
# chart is rendered for it
kube_version() {
  sed -n 's/^[[:space:]]*k8s\.io\/api v0\.\([0-9]*\)\.\([0-9]*\)$/v1.\1.\2/p' "$CHECKER_SRC/go.mod"
}

helm_current() {
  local helm go
  helm="$(helm_path)"
  [ -x "$helm" ] || return 1
  go="$(go_bin)"
  # binaries built by `go install` report their module version in their build info
  "$go" version -m "$helm" 2>/dev/null | awk '$1 == "mod" {print $3}' | grep -qx "$HELM_VERSION"
}

install() {
  mkdir -p "$GOBIN_DIR"
  exec 9>"$CACHE/go/.tools.lock"
  command -v flock >/dev/null && flock 9  # two worktrees installing at once build once
  local go
  go="$(go_bin)"
  if ! helm_current; then
    say "installing helm $HELM_VERSION (go install, a few minutes the first time)"
    "$go" install "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  fi
  local checker
  checker="$(checker_path)"
  if [ ! -x "$checker" ]; then
    say "building the chart checker into $checker"
    (cd "$CHECKER_SRC" && GOFLAGS=-mod=readonly "$go" build -trimpath -o "$checker.tmp.$$" .)
    mv -f "$checker.tmp.$$" "$checker"
    # checkers of older sources, unused for a month
    find "$GOBIN_DIR" -maxdepth 1 -name 'freshrec-helm-checker-*' -mtime +30 -delete 2>/dev/null || true
  fi
}

check() {
  local helm checker kube status=0
  helm="$(helm_path)"
  checker="$(checker_path)"
  kube="$(kube_version)"
  for tool in "$helm" "$checker"; do
    [ -x "$tool" ] || { say "missing $tool: run \`bash deploy/helm/tools.sh\` (or make install)"; exit 1; }
  done
  for values in values.yaml values-production.yaml; do
    local rendered
    if ! rendered="$("$helm" template freshrec "$CHART" --namespace freshrec \
      --kube-version "$kube" -f "$CHART/$values")"; then
      say "helm template failed with $values"
      status=1
      continue
    fi
    printf '%-24s ' "$values:"
    printf '%s\n' "$rendered" | "$checker" || status=1
  done
  return $status
}

case "${1:-install}" in
  install) install ;;
  paths) echo "helm $(helm_path)"; echo "checker $(checker_path)"; echo "kube-version $(kube_version)" ;;
  check) check ;;
  *) say "usage: tools.sh [install|paths|check]"; exit 2 ;;
esac
