#!/usr/bin/env bash
# Checks the monitoring and deployment bundle offline: dashboards/, deploy/ and the YAML of alerts/.
#
#   scripts/lib/check-deploy.sh        every check below; exits non-zero if any fails (all of them run)
#
# - yamllint (.yamllint) on deploy/ and alerts/
# - hadolint on deploy/Dockerfile; bash -n on the shell scripts of deploy/
# - kubernetes-validate --strict on the core Kubernetes manifests (1.30, the first release with native sidecars
#   and the preStop sleep action on by default, and the newest it knows); the CRDs (PodMonitor, PrometheusRule)
#   have no bundled schema and are checked by deploy/check_deploy.py
# - deploy/check_deploy.py: the compose stack and the manifests, their shape and that their pieces agree
# - the PrometheusRule is what alerts/ generates now, and its groups pass `promtool check rules`
# - deploy/prometheus/prometheus.yml passes `promtool check config` with the rules of alerts/
# - dashboards/check_dashboards.py (structure, metric names, labels) and every dashboard expression parsed by
#   promtool (as a recording rule: promtool 2.42 parses PromQL offline only there)
# - the checks catch what they are for: a renamed metric in a dashboard and an edited PrometheusRule must fail
# - with a built lifeguard (LIFEGUARD_BIN, else the debug build): `lifeguard check-config` accepts the compose and
#   ConfigMap configurations and the compose web configuration (metrics_web_config), and deploy/lifeguard-probe.sh (the image's HEALTHCHECK and preStop) works against it
# - only with LIFEGUARD_IMAGE_BUILD=1 and podman installed: `podman build` of deploy/Dockerfile (it pulls base
#   images from a registry, so it is never part of a default run; a failed pull is reported and skipped)
set -euo pipefail
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$LIFEGUARD_ROOT"

python_env
BIN="$(dirname "$PYTHON")"
TMP="$(mktemp -d -t lifeguard-deploy.XXXXXX)"
on_exit "rm -rf '$TMP'"
FAILED=()
PASSED=0
SKIPPED=0

# check NAME COMMAND...: runs one check, prints its output only when it fails (or skips: the command created
# $TMP/skipped), and goes on.
check() {
    local name=$1 start=$SECONDS
    shift
    rm -f "$TMP/skipped"
    if "$@" >"$TMP/out" 2>&1; then
        if [[ -f $TMP/skipped ]]; then
            SKIPPED=$((SKIPPED + 1))
            printf 'skip  %s\n' "$name" >&2
            sed 's/^/      /' "$TMP/out" >&2
            return 0
        fi
        PASSED=$((PASSED + 1))
        printf 'ok    %-58s %3ss\n' "$name" "$((SECONDS - start))" >&2
    else
        FAILED+=("$name")
        printf 'FAIL  %s\n' "$name" >&2
        sed 's/^/      /' "$TMP/out" >&2
    fi
}

yaml_lint() {
    local dirs=(deploy)
    [[ -d alerts ]] && dirs+=(alerts)
    "$BIN/yamllint" --strict -c .yamllint .yamllint "${dirs[@]}"
}

shell_syntax() {
    local script
    for script in deploy/*.sh deploy/compose/*.sh; do
        bash -n "$script" || return 1
    done
    if command -v shellcheck >/dev/null 2>&1; then
        shellcheck deploy/*.sh deploy/compose/*.sh
    fi
}

kubernetes_validate() {
    local manifests version
    mapfile -t manifests < <("$PYTHON" deploy/check_deploy.py --core-manifests)
    [[ ${#manifests[@]} -gt 0 ]] || {
        echo "no core manifest found in deploy/kubernetes"
        return 1
    }
    for version in 1.30.0 ""; do
        "$BIN/kubernetes-validate" --strict --quiet ${version:+-k "$version"} "${manifests[@]}" || return 1
    done
    echo "PodMonitor and PrometheusRule are CRDs without bundled schemas: deploy/check_deploy.py checks them"
}

prometheusrule_rules() {
    "$PYTHON" deploy/check_deploy.py --rule-groups "$TMP/prometheusrule-groups.json" &&
        promtool check rules "$TMP/prometheusrule-groups.json"
}

prometheus_config() {
    # Compose mounts alerts/ at /etc/prometheus/rules; point the copy at the repository's alerts/ instead.
    # The same for the files compose mounts for the HTTPS scrape of Lifeguard.
    sed -e "s|/etc/prometheus/rules/|$LIFEGUARD_ROOT/alerts/|" \
        -e "s|/etc/prometheus/lifeguard-ca.crt|$LIFEGUARD_ROOT/deploy/compose/tls/ca.crt|" \
        -e "s|/etc/prometheus/lifeguard-scrape-password|$LIFEGUARD_ROOT/deploy/prometheus/lifeguard-scrape-password|" \
        deploy/prometheus/prometheus.yml >"$TMP/prometheus.yml"
    promtool check config "$TMP/prometheus.yml"
}

dashboard_promql() {
    "$PYTHON" dashboards/check_dashboards.py --rules-file "$TMP/dashboard-exprs.json" >/dev/null &&
        promtool check rules "$TMP/dashboard-exprs.json"
}

# The checks must fail on what they guard against; a check that cannot fail proves nothing.
checks_catch_breakage() {
    mkdir -p "$TMP/dashboards"
    cp dashboards/*.json "$TMP/dashboards/"
    sed -i 's/lifeguard_pool_waiting_clients/lifeguard_pool_waiting_client/g' "$TMP/dashboards/lifeguard-overview.json"
    if "$PYTHON" dashboards/check_dashboards.py --dashboards "$TMP/dashboards" >/dev/null 2>&1; then
        echo "check_dashboards.py accepted a dashboard using a metric the exporter does not emit"
        return 1
    fi
    sed 's/lifeguard_pool_checked_out/lifeguard_pool_checked_out_renamed/' deploy/kubernetes/prometheusrule.yaml \
        >"$TMP/prometheusrule.yaml"
    if "$PYTHON" deploy/kubernetes/generate-prometheusrule.py --check --output "$TMP/prometheusrule.yaml" \
        >/dev/null 2>&1; then
        echo "generate-prometheusrule.py --check accepted a PrometheusRule that differs from alerts/"
        return 1
    fi
}

lifeguard_bin() {
    if [[ -n ${LIFEGUARD_BIN:-} ]]; then
        echo "$LIFEGUARD_BIN"
    elif command -v swift >/dev/null 2>&1; then
        # shellcheck disable=SC2119 # the debug build: swift_bin_path without configuration arguments
        echo "$(swift_bin_path)/lifeguard"
    fi
}

# lifeguard check-config on a configuration with the upstream given as the deployment gives it (a dummy password).
config_accepted() {
    local bin=$1 file=$2
    env -i PATH=/usr/bin:/bin LIFEGUARD_UPSTREAM='postgresql://app:not-the-password@db.invalid:5432/appdb' \
        "$bin" check-config "$file" >"$TMP/check-config.out" || {
        cat "$TMP/check-config.out"
        return 1
    }
    if grep -q 'not-the-password' "$TMP/check-config.out"; then
        echo "check-config printed the password"
        return 1
    fi
}

configs_accepted() {
    local bin=$1
    config_accepted "$bin" deploy/compose/lifeguard.toml || return 1
    "$PYTHON" -c 'import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))["data"]["lifeguard.toml"], end="")' \
        deploy/kubernetes/configmap.yaml >"$TMP/configmap-lifeguard.toml"
    config_accepted "$bin" "$TMP/configmap-lifeguard.toml" || return 1
    # The compose demo's web configuration (HTTPS, basic auth), with its demo certificate: valid and not expiring.
    env -i PATH=/usr/bin:/bin LIFEGUARD_METRICS_WEB_CONFIG=deploy/compose/web.yml \
        LIFEGUARD_UPSTREAM='postgresql://app@db.invalid:5432/appdb' \
        "$bin" check-config deploy/compose/lifeguard.toml >"$TMP/check-config.out" 2>&1 || {
        cat "$TMP/check-config.out"
        return 1
    }
}

# deploy/lifeguard-probe.sh against a real Lifeguard (upstream on a closed port: alive, not ready, no clients),
# then against nothing.
probe_works() {
    local bin=$1 port pid probe=deploy/lifeguard-probe.sh status=0
    port="$(free_port)"
    "$bin" run --upstream "postgresql://app@127.0.0.1:1/appdb" --listen "127.0.0.1:0" \
        --metrics-listen "127.0.0.1:$port" >"$TMP/lifeguard.log" 2>&1 &
    pid=$!
    if wait_http "http://127.0.0.1:$port/healthz" 20 "$pid"; then
        export LIFEGUARD_METRICS_LISTEN="0.0.0.0:$port"
        bash "$probe" health || {
            echo "health failed against a live Lifeguard"
            status=1
        }
        if bash "$probe" health /readyz 2>/dev/null; then
            echo "health /readyz passed while the upstream is down"
            status=1
        fi
        bash "$probe" wait-idle 2 || {
            echo "wait-idle did not return 0 without clients"
            status=1
        }
    else
        cat "$TMP/lifeguard.log"
        status=1
    fi
    stop_process "$pid" lifeguard 10
    if [[ $status -eq 0 ]] && bash "$probe" health 2>/dev/null; then
        echo "health passed with nothing listening"
        status=1
    fi
    unset LIFEGUARD_METRICS_LISTEN
    return "$status"
}

podman_build() {
    if timeout 300 podman build --pull=missing -f deploy/Dockerfile -t lifeguard:check "$LIFEGUARD_ROOT" \
        >"$TMP/podman.log" 2>&1; then
        podman rmi -f lifeguard:check >/dev/null 2>&1 || true
        echo "built"
        return 0
    fi
    if grep -Eq 'pinging container registry|no such host|initializing source|unable to pull|network is unreachable' \
        "$TMP/podman.log"; then
        echo "podman read deploy/Dockerfile but could not pull its base image (no registry is reachable):"
        grep -m1 -E 'Error|error' "$TMP/podman.log"
        touch "$TMP/skipped"
        return 0
    fi
    cat "$TMP/podman.log"
    return 1
}

log "checking dashboards/, deploy/ and the YAML of alerts/"
check "yamllint deploy/ alerts/" yaml_lint
check "hadolint deploy/Dockerfile" "$BIN/hadolint" deploy/Dockerfile
check "bash -n deploy/ scripts" shell_syntax
check "kubernetes-validate --strict (1.30 and newest)" kubernetes_validate
check "deploy/check_deploy.py (compose, manifests, CRDs)" "$PYTHON" deploy/check_deploy.py
check "PrometheusRule up to date with alerts/" "$PYTHON" deploy/kubernetes/generate-prometheusrule.py --check
check "promtool check rules on the PrometheusRule" prometheusrule_rules
check "promtool check config deploy/prometheus" prometheus_config
check "dashboards/check_dashboards.py" "$PYTHON" dashboards/check_dashboards.py
check "promtool parses every dashboard expression" dashboard_promql
check "the checks catch a renamed metric and a stale rule" checks_catch_breakage
bin="$(lifeguard_bin || true)"
if [[ -n $bin && -x $bin ]]; then
    check "lifeguard check-config: compose and ConfigMap" configs_accepted "$bin"
    check "lifeguard-probe against a running lifeguard" probe_works "$bin"
else
    warn "no built lifeguard (set LIFEGUARD_BIN or build first): skipped check-config and lifeguard-probe checks"
fi
if [[ ${LIFEGUARD_IMAGE_BUILD:-0} == 1 ]] && command -v podman >/dev/null 2>&1; then
    check "podman build deploy/Dockerfile" podman_build
else
    log "the image is linted (hadolint), not built (LIFEGUARD_IMAGE_BUILD=1 with podman installed builds it)"
fi

if [[ ${#FAILED[@]} -gt 0 ]]; then
    printf 'check-deploy: %d passed, %d failed, %d skipped: %s\n' "$PASSED" "${#FAILED[@]}" "$SKIPPED" "$(
        IFS=,
        echo "${FAILED[*]}"
    )" >&2
    exit 1
fi
printf 'check-deploy: %d passed, 0 failed, %d skipped\n' "$PASSED" "$SKIPPED" >&2
