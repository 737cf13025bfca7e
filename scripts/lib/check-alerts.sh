#!/usr/bin/env bash
# Checks the Prometheus rules in alerts/ and their runbooks in docs/runbooks/; exits non-zero if any check fails.
#
#   scripts/lib/check-alerts.sh          promtool check rules, promtool test rules, then alerts/tests/check_rules.py:
#                                        metric names against docs/metrics.md, alert annotations, runbooks, that
#                                        every alert has firing and silent tests, the README's threshold table,
#                                        mutants (each alert's tests fail when its expression is broken) and the
#                                        checker's self-test
#   scripts/lib/check-alerts.sh --all    the mutants also with for: 0, doubled for:, moved boundaries and every
#                                        recording rule emptied (about a minute more)
#
# scripts/test runs it. It needs promtool (Debian's prometheus package) and PyYAML (python3-yaml), installed when
# missing. Every check runs even when an earlier one failed; the summary lists the failures.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$LIFEGUARD_ROOT"

MUTANTS_ARGS=()
for arg in "$@"; do
    case $arg in
    --all) MUTANTS_ARGS=(--all) ;;
    -h | --help)
        sed -n '2,13p' "$0"
        exit 0
        ;;
    *) die "unknown argument: $arg (try --help)" ;;
    esac
done

command -v promtool >/dev/null 2>&1 || apt_install_missing prometheus
command -v promtool >/dev/null 2>&1 || die "promtool not found after installing prometheus"
# Debian's python3, not .venv: PyYAML comes from python3-yaml.
PY=/usr/bin/python3
[[ -x $PY ]] || apt_install_missing python3
"$PY" -c 'import yaml' 2>/dev/null || apt_install_missing python3-yaml

shopt -s nullglob
RULES=(alerts/*.yml)
TESTS=(alerts/tests/*.test.yml)
[[ ${#RULES[@]} -gt 0 ]] || die "no rule files in alerts/"
[[ ${#TESTS[@]} -gt 0 ]] || die "no unit tests in alerts/tests/"

FAILED=()
check() {
    local name=$1 start=$SECONDS
    shift
    printf '\n--> %s\n' "$name"
    if "$@"; then
        printf 'ok   %s (%ss)\n' "$name" "$((SECONDS - start))"
    else
        printf 'FAIL %s\n' "$name"
        FAILED+=("$name")
    fi
}

started=$SECONDS
check "promtool check rules (${#RULES[@]} files)" promtool check rules "${RULES[@]}"
check "promtool test rules (${#TESTS[@]} files)" promtool test rules "${TESTS[@]}"
check "metric and label names exist in docs/metrics.md" "$PY" alerts/tests/check_rules.py metrics
check "every alert: severity, summary, description, runbook_url" "$PY" alerts/tests/check_rules.py rules
check "every alert has a runbook; every runbook_url points at one" "$PY" alerts/tests/check_rules.py runbooks
check "every alert rule is tested firing and silent" "$PY" alerts/tests/check_rules.py tests
check "alerts/README.md threshold table matches the rules" "$PY" alerts/tests/check_rules.py readme
check "breaking an alert expression fails its tests (mutants)" \
    "$PY" alerts/tests/check_rules.py mutants ${MUTANTS_ARGS[@]+"${MUTANTS_ARGS[@]}"}
check "each check fails on a broken copy (self-test)" "$PY" alerts/tests/check_rules.py selftest

printf '\ncheck-alerts: %s rule files, %s test files, %ss\n' "${#RULES[@]}" "${#TESTS[@]}" "$((SECONDS - started))"
if [[ ${#FAILED[@]} -gt 0 ]]; then
    printf 'check-alerts: FAILED: %s\n' "$(
        IFS=,
        echo "${FAILED[*]}"
    )"
    exit 1
fi
printf 'check-alerts: all passed\n'
