#!/usr/bin/env python3
"""Checks of the alert rules that promtool does not make; scripts/lib/check-alerts.sh runs them.

    check_rules.py metrics    every metric and label the rules use is in the exporter's catalogue (docs/metrics.md)
    check_rules.py rules      every alert has severity, summary, description and runbook_url, naming what it should
    check_rules.py runbooks   every runbook_url is BASE/docs/runbooks/<alertname>.md and that file exists (and back)
    check_rules.py tests      every alert rule is shown firing and staying silent in alerts/tests/<alertname>.test.yml
    check_rules.py readme     the threshold table of alerts/README.md matches lifeguard-thresholds.yml
    check_rules.py mutants [--all]
                              breaking a rule makes `promtool test rules` fail: for each alert, the expression that
                              never fires and the one with every comparison inverted; --all also for: 0, for doubled,
                              every recording rule emptied and each comparison moved by its boundary (> to >=, ...)
    check_rules.py selftest   the checks above fail on broken copies of the files (a check that cannot fail is none)

Exits 1 with one line per problem. Needs PyYAML (Debian: python3-yaml) and, for mutants, promtool.
"""

from __future__ import annotations

import concurrent.futures
import copy
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

# LIFEGUARD_CHECK_ROOT: another copy of the repository (the self-test checks broken copies).
ROOT = Path(os.environ.get("LIFEGUARD_CHECK_ROOT") or Path(__file__).resolve().parents[2])
ALERTS = ROOT / "alerts"
TESTS = ALERTS / "tests"
RUNBOOKS = ROOT / "docs" / "runbooks"
METRICS_DOC = ROOT / "docs" / "metrics.md"

# The one base of every runbook_url (alerts/README.md, "Runbook links").
RUNBOOK_BASE = "https://github.com/lifeguard-pooler/lifeguard/blob/main/"

# Series the rules read that Lifeguard does not export, and who does.
EXTERNAL_METRICS = {
    "up": ("Prometheus, for every scrape target", {"job", "instance"}),
    "pg_settings_max_connections": ("postgres_exporter (optional; lifeguard:database_max_connections)", None),
}
# Labels every scraped series has besides the exporter's own.
TARGET_LABELS = {"job", "instance"}
SEVERITIES = {"warning", "critical"}
RUNBOOK_SECTIONS = ["## What it means", "## How to confirm", "## Likely causes", "## What to do"]


def fail(problems: list[str], what: str) -> int:
    if problems:
        for p in problems:
            print(f"  FAIL {p}")
        print(f"{what}: {len(problems)} problem(s)")
        return 1
    return 0


# ---------------------------------------------------------------------------------------------------------------
# Rule files


def rule_files() -> list[Path]:
    return sorted(ALERTS.glob("*.yml"))


def load_groups() -> list[tuple[Path, dict]]:
    out = []
    for path in rule_files():
        for group in yaml.safe_load(path.read_text())["groups"]:
            out.append((path, group))
    return out


def all_rules() -> list[tuple[Path, str, dict]]:
    return [(path, g["name"], r) for path, g in load_groups() for r in g["rules"]]


def alert_rules() -> list[tuple[Path, str, dict]]:
    return [x for x in all_rules() if "alert" in x[2]]


def recorded_names() -> set[str]:
    return {r["record"] for _, _, r in all_rules() if "record" in r}


# ---------------------------------------------------------------------------------------------------------------
# The exporter's catalogue, from docs/metrics.md (a Swift test keeps that page identical to the code).


def catalogue() -> tuple[dict[str, tuple[str, set[str]]], dict[tuple[str, str], set[str]]]:
    """({metric: (type, labels)}, {(metric, label): values})"""
    text = METRICS_DOC.read_text()
    metrics: dict[str, tuple[str, set[str]]] = {}
    values: dict[tuple[str, str], set[str]] = {}
    section = None
    for line in text.splitlines():
        if line.startswith("## "):
            section = line[3:].strip()
            continue
        if not line.startswith("| `"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if section == "Reference":
            name = cells[0].strip("`")
            labels = set(re.findall(r"`([a-z_]+)`", cells[2]))
            metrics[name] = (cells[1], labels)
        elif section == "Label values":
            values[(cells[0].strip("`"), cells[1].strip("`"))] = set(re.findall(r"`([^`]+)`", cells[2]))
    if len(metrics) < 10 or not values:
        raise SystemExit(f"could not read the metric tables of {METRICS_DOC}")
    return metrics, values


def series_names(metrics: dict[str, tuple[str, set[str]]]) -> dict[str, tuple[str, set[str]]]:
    """Names of the series a scrape has: a histogram is its _bucket, _sum and _count."""
    out = {}
    for name, (kind, labels) in metrics.items():
        if kind == "histogram":
            out[name + "_bucket"] = (name, labels | {"le"})
            out[name + "_sum"] = (name, labels)
            out[name + "_count"] = (name, labels)
        else:
            out[name] = (name, labels)
    return out


# ---------------------------------------------------------------------------------------------------------------
# A small PromQL reader: enough to find the selectors, their matchers, the grouping labels and the comparison
# operators of the expressions we write. It refuses what it does not understand instead of guessing.

TOKEN = re.compile(
    r"""(?P<ws>\s+|\#[^\n]*)
      | (?P<str>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`)
      | (?P<num>(?:0x[0-9a-fA-F]+|\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+)(?:[smhdwy]|ms)*(?:\d+(?:[smhdwy]|ms))*)
      | (?P<ident>[a-zA-Z_:][a-zA-Z0-9_:]*)
      | (?P<op>=~|!~|!=|==|>=|<=|[-+*/%^<>=,(){}\[\]@])""",
    re.X,
)
AGGREGATIONS = {
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk", "topk", "quantile",
}
GROUPING = {"by", "without", "on", "ignoring", "group_left", "group_right"}
KEYWORDS = {"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan", "start", "end"}
COMPARISONS = {">": "<=", "<": ">=", ">=": "<", "<=": ">", "==": "!=", "!=": "=="}
BOUNDARY = {">": ">=", ">=": ">", "<": "<=", "<=": "<"}
# Boundary mutants no test can catch, and why.
KNOWN_SURVIVORS = {
    # The ratio of two checkout rates is never exactly the tolerance (1.1) for the 10 minutes of `for`.
    "LifeguardPoolLeakSuspected (warning, checked_out_trend): `<=` 2 moved to `<`",
}


def tokenize(expr: str) -> list[tuple[str, str, int]]:
    out, pos = [], 0
    while pos < len(expr):
        m = TOKEN.match(expr, pos)
        if not m:
            raise ValueError(f"cannot read PromQL at {expr[pos:pos + 20]!r}")
        if m.lastgroup != "ws":
            out.append((m.lastgroup, m.group(), m.start()))
        pos = m.end()
    return out


class Parsed:
    def __init__(self, expr: str):
        self.selectors: list[tuple[str, list[tuple[str, str, str]]]] = []  # (name, [(label, op, value)])
        self.grouping_labels: set[str] = set()
        self.comparisons: list[tuple[int, str]] = []  # (offset, operator) of binary comparisons
        toks = tokenize(expr)
        i = 0
        while i < len(toks):
            kind, text, at = toks[i]
            nxt = toks[i + 1][1] if i + 1 < len(toks) else None
            if kind == "ident" and text in GROUPING:
                i += 1
                if nxt == "(":
                    i += 1
                    while toks[i][1] != ")":
                        if toks[i][0] == "ident":
                            self.grouping_labels.add(toks[i][1])
                        i += 1
                    i += 1
                continue
            if kind == "ident" and (text in AGGREGATIONS or nxt == "("):
                i += 1  # a function or an aggregation, not a metric
                continue
            if kind == "ident" and text.lower() in KEYWORDS:
                i += 1
                continue
            if kind == "ident" or text == "{":
                name = text if kind == "ident" else None
                if kind == "ident":
                    i += 1
                matchers = []
                if i < len(toks) and toks[i][1] == "{":
                    i += 1
                    while toks[i][1] != "}":
                        if toks[i][1] == ",":
                            i += 1
                            continue
                        label, op, value = toks[i][1], toks[i + 1][1], toks[i + 2][1]
                        if toks[i + 2][0] != "str":
                            raise ValueError(f"unexpected matcher near {label}{op}{value}")
                        matchers.append((label, op, value[1:-1]))
                        i += 3
                    i += 1
                if name is None:
                    names = [v for (label, op, v) in matchers if label == "__name__"]
                    if len(names) != 1 or any(op != "=" for (label, op, _) in matchers if label == "__name__"):
                        raise ValueError("a selector without a literal metric name: write the name")
                    name = names[0]
                    matchers = [m for m in matchers if m[0] != "__name__"]
                self.selectors.append((name, matchers))
                continue
            if text == "[":
                while toks[i][1] != "]":
                    i += 1
                i += 1
                continue
            if kind == "op" and text in COMPARISONS:
                self.comparisons.append((at, text))
            i += 1


def template_queries(text: str) -> list[str]:
    """The PromQL in `printf "..." | query` of an annotation, with the printf verbs filled in."""
    out = []
    for fmt in re.findall(r'printf\s+"((?:\\.|[^"\\])*)"', text):
        out.append(fmt.replace('\\"', '"').replace("%q", '"x"').replace("%s", "x").replace("%v", "x"))
    return out


def template_labels(text: str) -> set[str]:
    return set(re.findall(r"\$labels\.([a-zA-Z_][a-zA-Z0-9_]*)", text))


def cmd_metrics() -> int:
    metrics, values = catalogue()
    series = series_names(metrics)
    recorded = recorded_names()
    universe = TARGET_LABELS | {"le"} | {lab for _, labs in metrics.values() for lab in labs}
    problems: list[str] = []
    used: dict[str, set[str]] = {}
    for path, group, rule in all_rules():
        where = f"{path.name}: {rule.get('alert') or rule.get('record')}"
        exprs = [("expr", rule["expr"])]
        for key, text in (rule.get("annotations") or {}).items():
            exprs += [(f"annotation {key}", q) for q in template_queries(text)]
            for lab in template_labels(text) - universe:
                problems.append(f"{where}: annotation {key} uses $labels.{lab}, a label no series has")
        for what, expr in exprs:
            try:
                parsed = Parsed(expr)
            except (ValueError, IndexError) as e:
                problems.append(f"{where}: {what}: {e}")
                continue
            for lab in parsed.grouping_labels - universe:
                problems.append(f"{where}: {what}: groups or matches on label {lab!r}, which no series has")
            for name, matchers in parsed.selectors:
                used.setdefault(name, set()).add(where)
                if name in recorded:
                    continue
                if name in EXTERNAL_METRICS:
                    allowed = EXTERNAL_METRICS[name][1]
                    for label, _, _ in matchers:
                        if allowed is not None and label not in allowed:
                            problems.append(f"{where}: {what}: {name} has no label {label!r}")
                    continue
                if name not in series:
                    hint = " (a histogram: use _bucket, _sum or _count)" if name in metrics else ""
                    problems.append(f"{where}: {what}: {name} is not in docs/metrics.md{hint}")
                    continue
                family, labels = series[name]
                for label, op, value in matchers:
                    if label not in labels | TARGET_LABELS:
                        problems.append(f"{where}: {what}: {name} has no label {label!r} (it has {sorted(labels)})")
                    elif op == "=" and (family, label) in values and value not in values[(family, label)]:
                        problems.append(
                            f"{where}: {what}: {name}{{{label}={value!r}}}: not a value of {label} "
                            f"({sorted(values[(family, label)])})"
                        )
    for name in sorted(used):
        origin = (
            "recorded in alerts/" if name in recorded
            else EXTERNAL_METRICS[name][0] if name in EXTERNAL_METRICS
            else "docs/metrics.md" if name in series
            else "UNKNOWN"
        )
        print(f"  {name:48} {origin}")
    return fail(problems, "metric names")


# ---------------------------------------------------------------------------------------------------------------


def cmd_rules() -> int:
    problems = []
    for path, group, rule in alert_rules():
        name = rule["alert"]
        where = f"{path.name}: {name}"
        labels, ann = rule.get("labels") or {}, rule.get("annotations") or {}
        if labels.get("severity") not in SEVERITIES:
            problems.append(f"{where}: severity must be one of {sorted(SEVERITIES)}, is {labels.get('severity')!r}")
        for key in ("summary", "description", "runbook_url"):
            if not ann.get(key):
                problems.append(f"{where}: annotation {key} missing")
        summary, description = ann.get("summary", ""), ann.get("description", "")
        if "$labels.instance" not in summary + description and "$labels.job" not in summary + description:
            problems.append(f"{where}: summary/description name neither the instance nor the job")
        if name.startswith("LifeguardPool"):
            for lab in ("database", "user", "instance"):
                if f"$labels.{lab}" not in summary or f"$labels.{lab}" not in description:
                    problems.append(f"{where}: a pool alert's summary and description name $labels.{lab}")
        # An alert on a 0/1 gauge has no number worth printing; every other description prints its value.
        if not re.search(r"==\s*0\s*$", rule["expr"].strip()) and "$value" not in description:
            problems.append(f"{where}: description does not print {{{{ $value }}}}")
        if not group.startswith("lifeguard-"):
            problems.append(f"{where}: group {group} is not a lifeguard-* group")
        if "for" not in rule:
            problems.append(f"{where}: no `for:`")
    print(f"  {len(alert_rules())} alert rules, {len({r['alert'] for _, _, r in alert_rules()})} alert names")
    return fail(problems, "alert rules")


def cmd_runbooks() -> int:
    problems = []
    names = sorted({r["alert"] for _, _, r in alert_rules()})
    metrics, _ = catalogue()
    known_names = set(series_names(metrics)) | set(metrics) | recorded_names()
    for path, _, rule in alert_rules():
        name, url = rule["alert"], (rule.get("annotations") or {}).get("runbook_url", "")
        expected = f"{RUNBOOK_BASE}docs/runbooks/{name}.md"
        if url != expected:
            problems.append(f"{path.name}: {name}: runbook_url is {url!r}, expected {expected!r}")
        target = ROOT / url[len(RUNBOOK_BASE):] if url.startswith(RUNBOOK_BASE) else None
        if target is None or not target.is_file():
            problems.append(f"{path.name}: {name}: runbook_url points at {url!r}, which is not a file in the repository")
    for name in names:
        page = RUNBOOKS / f"{name}.md"
        if not page.is_file():
            problems.append(f"docs/runbooks/{name}.md missing")
            continue
        text = page.read_text()
        if not text.startswith(f"# {name}\n"):
            problems.append(f"docs/runbooks/{name}.md: must start with '# {name}'")
        for section in RUNBOOK_SECTIONS:
            if section not in text:
                problems.append(f"docs/runbooks/{name}.md: section '{section}' missing")
        # The metric names a runbook tells the reader to query must exist too.
        for metric in sorted(set(re.findall(r"\b(lifeguard_[a-z_]+|lifeguard:[a-z0-9_:]+[a-z0-9])", text))):
            if metric not in known_names:
                problems.append(f"docs/runbooks/{name}.md: {metric} is neither in docs/metrics.md nor recorded")
        for link in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text):
            if not re.match(r"[a-z]+:", link) and not (page.parent / link).exists():
                problems.append(f"docs/runbooks/{name}.md: link {link} points at nothing")
    for page in sorted(RUNBOOKS.glob("*.md")):
        if page.stem not in names and page.name != "README.md":
            problems.append(f"docs/runbooks/{page.name}: no alert of that name")
    index = RUNBOOKS / "README.md"
    if index.is_file():
        for name in names:
            if f"({name}.md)" not in index.read_text():
                problems.append(f"docs/runbooks/README.md does not link {name}.md")
    print(f"  {len(names)} runbooks in docs/runbooks/, {len(alert_rules())} runbook_url annotations")
    return fail(problems, "runbooks")


def cmd_tests() -> int:
    problems = []
    groups = [g["name"] for _, g in load_groups()]
    fired: dict[tuple, int] = {}
    silent: dict[str, int] = {}
    for path in sorted(TESTS.glob("*.test.yml")):
        doc = yaml.safe_load(path.read_text())
        order = doc.get("group_eval_order") or []
        if sorted(order) != sorted(groups) or order[0] != "lifeguard-thresholds":
            problems.append(f"{path.name}: group_eval_order must list every group, lifeguard-thresholds first")
        files = [(path.parent / f).resolve() for f in doc.get("rule_files", [])]
        if sorted(files) != sorted(p.resolve() for p in rule_files()):
            problems.append(f"{path.name}: rule_files must be every alerts/*.yml")
        for test in doc["tests"]:
            for case in test.get("alert_rule_test") or []:
                if case.get("exp_alerts"):
                    for alert in case["exp_alerts"]:
                        labels = alert.get("exp_labels") or {}
                        key = (case["alertname"], labels.get("severity"), labels.get("detector"))
                        fired[key] = fired.get(key, 0) + 1
                        if not (alert.get("exp_annotations") or {}).get("description"):
                            problems.append(f"{path.name}: {case['alertname']} at {case['eval_time']}: "
                                            "exp_annotations must check the annotations")
                else:
                    silent[case["alertname"]] = silent.get(case["alertname"], 0) + 1
    for _, _, rule in alert_rules():
        labels = rule.get("labels") or {}
        key = (rule["alert"], labels.get("severity"), labels.get("detector"))
        if not (TESTS / f"{rule['alert']}.test.yml").is_file():
            problems.append(f"alerts/tests/{rule['alert']}.test.yml missing")
        if not fired.get(key):
            problems.append(f"{rule['alert']} ({labels}): no test shows it firing")
        if not silent.get(rule["alert"]):
            problems.append(f"{rule['alert']}: no test shows it silent")
    for (name, severity, detector), n in sorted(fired.items(), key=str):
        extra = f", {detector}" if detector else ""
        print(f"  {name} ({severity}{extra}): fires in {n} check(s), silent in {silent.get(name, 0)}")
    return fail(problems, "alert tests")


def cmd_readme() -> int:
    problems = []
    rules = {r["record"]: r["expr"] for _, _, r in all_rules() if "record" in r}
    readme = (ALERTS / "README.md").read_text()
    rows = dict(re.findall(r"^\| `(lifeguard:threshold:[a-z0-9_]+)` \| ([^|]+?) \|", readme, re.M))
    for name, expr in sorted(rules.items()):
        if not name.startswith("lifeguard:threshold:"):
            continue
        m = re.fullmatch(r"group by \(job\) \(lifeguard_build_info\) \* ([0-9.]+)", expr.strip())
        if not m:
            problems.append(f"{name}: expected `group by (job) (lifeguard_build_info) * NUMBER`, got {expr!r}")
            continue
        if name not in rows:
            problems.append(f"alerts/README.md: no row for {name}")
        elif rows[name].strip() != m.group(1):
            problems.append(f"alerts/README.md: {name} is {rows[name].strip()} there, {m.group(1)} in the rule")
    for name in rows:
        if name not in rules:
            problems.append(f"alerts/README.md: {name} is not a rule")
    print(f"  {len(rows)} thresholds in alerts/README.md")
    return fail(problems, "README thresholds")


# ---------------------------------------------------------------------------------------------------------------
# Mutants: a rule file with one rule broken must make its tests fail.


def invert_comparisons(expr: str) -> str | None:
    ops = Parsed(expr).comparisons
    if not ops:
        return None
    out = expr
    for at, op in sorted(ops, reverse=True):
        out = out[:at] + COMPARISONS[op] + out[at + len(op):]
    return out


def double_duration(d: str) -> str:
    m = re.fullmatch(r"(\d+)([smh])", d)
    if not m:
        raise ValueError(f"unexpected duration {d}")
    return f"{2 * int(m.group(1))}{m.group(2)}"


def mutants(full: bool):
    docs = {p: yaml.safe_load(p.read_text()) for p in rule_files()}
    for path, doc in docs.items():
        for gi, group in enumerate(doc["groups"]):
            for ri, rule in enumerate(group["rules"]):
                name = rule.get("alert") or rule.get("record")
                variants = []
                if "alert" in rule:
                    variants.append(("never fires", "expr", f"({rule['expr'].strip()}) unless on() vector(1)"))
                    inverted = invert_comparisons(rule["expr"])
                    if inverted:
                        variants.append(("comparisons inverted", "expr", inverted))
                    if full:
                        variants.append(("for: 0s", "for", "0s"))
                        variants.append((f"for: {double_duration(rule['for'])}", "for", double_duration(rule["for"])))
                        for n, (at, op) in enumerate(Parsed(rule["expr"]).comparisons, 1):
                            if op in BOUNDARY:
                                moved = rule["expr"][:at] + BOUNDARY[op] + rule["expr"][at + len(op):]
                                variants.append((f"`{op}` {n} moved to `{BOUNDARY[op]}`", "expr", moved))
                    tests = [TESTS / f"{rule['alert']}.test.yml"]
                    severity = (rule.get("labels") or {}).get("severity", "")
                    detector = (rule.get("labels") or {}).get("detector")
                    label = f"{name} ({severity}{', ' + detector if detector else ''})"
                elif full:
                    variants.append(("records nothing", "expr", f"({rule['expr'].strip()}) unless on() vector(1)"))
                    tests = sorted(TESTS.glob("*.test.yml"))
                    label = name
                for what, key, value in variants:
                    mutated = copy.deepcopy(docs)
                    mutated[path]["groups"][gi]["rules"][ri][key] = value
                    yield f"{label}: {what}", mutated, tests


def run_mutant(args) -> tuple[str, bool, str]:
    label, docs, tests = args
    with tempfile.TemporaryDirectory(prefix="lifeguard-mutant-") as tmp:
        alerts = Path(tmp) / "alerts"
        (alerts / "tests").mkdir(parents=True)
        for path, doc in docs.items():
            (alerts / path.name).write_text(yaml.safe_dump(doc, sort_keys=False))
        copies = []
        for t in tests:
            shutil.copy(t, alerts / "tests" / t.name)
            copies.append(str(alerts / "tests" / t.name))
        res = subprocess.run(["promtool", "test", "rules", *copies], capture_output=True, text=True)
        output = res.stdout + res.stderr
        return label, res.returncode, output


def cmd_mutants(full: bool) -> int:
    # The unmutated files, written the same way, must pass: otherwise every mutant "fails" for the wrong reason.
    docs = {p: yaml.safe_load(p.read_text()) for p in rule_files()}
    _, status, output = run_mutant(("unmutated", docs, sorted(TESTS.glob("*.test.yml"))))
    if status != 0:
        print(output)
        return fail(["the unmutated rules, rewritten, do not pass their tests"], "mutants")
    problems, count = [], 0
    workers = max(1, min(4, os.cpu_count() or 1))
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        for label, status, output in pool.map(run_mutant, mutants(full)):
            count += 1
            # Caught means a test's expectation failed ("exp: ... got: ..."), not that the mutant did not load.
            caught = status != 0 and "got:" in output
            known = label in KNOWN_SURVIVORS
            print(f"  {'caught  ' if caught else 'survived (known)' if known else 'SURVIVED'} {label}")
            if not caught and not known:
                problems.append(f"mutant survived the tests: {label}")
            elif caught and known:
                problems.append(f"a known survivor is caught now: remove it from KNOWN_SURVIVORS: {label}")
    print(f"  {count - len(problems)} of {count} mutants caught or known")
    return fail(problems, "mutants")


# ---------------------------------------------------------------------------------------------------------------
# Self-test: each check must fail on a copy of the repository broken in the way it is meant to catch.

SELFTEST_CASES = [
    # (check, file, old, new, expected message)
    ("metrics", "alerts/lifeguard-alerts.yml", "lifeguard_pool_waiting_clients >", "lifeguard_pool_waiting_client >",
     "lifeguard_pool_waiting_client is not in docs/metrics.md"),
    ("metrics", "alerts/lifeguard-alerts.yml", 'reason="max_client_conn"', 'reason="max_clients"',
     "not a value of reason"),
    ("metrics", "alerts/lifeguard-alerts.yml", "rate(lifeguard_pool_wait_seconds_bucket[5m])",
     "rate(lifeguard_pool_wait_seconds[5m])", "a histogram: use _bucket"),
    ("metrics", "alerts/lifeguard-alerts.yml", 'printf "lifeguard:threshold:waiting_clients{',
     'printf "lifeguard:threshold:waiting_client{', "annotation description: lifeguard:threshold:waiting_client is"),
    ("metrics", "alerts/lifeguard-alerts.yml", "sum without (state)", "sum without (status)", "label 'status'"),
    ("metrics", "alerts/lifeguard-alerts.yml", "lifeguard_upstream_up == 0", 'lifeguard_upstream_up{reason="x"} == 0',
     "has no label 'reason'"),
    ("rules", "alerts/lifeguard-alerts.yml", "severity: critical", "severity: page", "severity must be one of"),
    ("rules", "alerts/lifeguard-alerts.yml", "{{ $labels.database }}/{{ $labels.user }} on {{ $labels.instance }} is exhausted",
     "is exhausted", "name $labels.database"),
    ("runbooks", "docs/runbooks/LifeguardDown.md", None, None, "docs/runbooks/LifeguardDown.md missing"),
    ("runbooks", "alerts/lifeguard-alerts.yml", "runbooks/LifeguardUpstreamDown.md", "runbooks/LifeguardUpstream.md",
     "runbook_url is"),
    ("runbooks", "docs/runbooks/LifeguardOld.md", None, "# LifeguardOld\n", "no alert of that name"),
    ("runbooks", "docs/runbooks/LifeguardPoolTimeouts.md", "## Likely causes", "## Causes", "section '## Likely causes'"),
    ("runbooks", "docs/runbooks/LifeguardPoolExhausted.md", "lifeguard_pool_waiting_clients{",
     "lifeguard_pool_waiters{", "lifeguard_pool_waiters is neither in docs/metrics.md nor recorded"),
    ("tests", "alerts/tests/LifeguardUpstreamDown.test.yml", None, None, "LifeguardUpstreamDown.test.yml missing"),
    ("tests", "alerts/tests/LifeguardDown.test.yml", "group_eval_order:", "# group_eval_order:", "group_eval_order"),
    ("readme", "alerts/README.md", "| `lifeguard:threshold:open_fds_ratio` | 0.8 |",
     "| `lifeguard:threshold:open_fds_ratio` | 0.9 |", "open_fds_ratio is 0.9 there, 0.8 in the rule"),
]
SELFTEST_CHECKS = ["metrics", "rules", "runbooks", "tests", "readme"]


def cmd_selftest() -> int:
    problems = []

    def run(root: Path, check: str) -> subprocess.CompletedProcess:
        env = dict(os.environ, LIFEGUARD_CHECK_ROOT=str(root))
        return subprocess.run([sys.executable, __file__, check], capture_output=True, text=True, env=env)

    def copy_repo(tmp: str) -> Path:
        root = Path(tmp)
        shutil.copytree(ALERTS, root / "alerts")
        shutil.copytree(RUNBOOKS, root / "docs" / "runbooks")
        shutil.copy(METRICS_DOC, root / "docs" / "metrics.md")
        return root

    with tempfile.TemporaryDirectory(prefix="lifeguard-selftest-") as tmp:
        root = copy_repo(tmp)
        for check in SELFTEST_CHECKS:
            res = run(root, check)
            if res.returncode != 0:
                problems.append(f"the unbroken copy fails `{check}`: {res.stdout}{res.stderr}")
    for check, rel, old, new, expected in SELFTEST_CASES:
        with tempfile.TemporaryDirectory(prefix="lifeguard-selftest-") as tmp:
            root = copy_repo(tmp)
            path = root / rel
            if old is None and new is None:
                path.unlink()
            elif old is None:
                path.write_text(new)
            else:
                text = path.read_text()
                if old not in text:
                    problems.append(f"self-test case out of date: {old!r} is not in {rel}")
                    continue
                path.write_text(text.replace(old, new, 1))
            res = run(root, check)
            out = res.stdout + res.stderr
            ok = res.returncode == 1 and expected in out
            print(f"  {'ok  ' if ok else 'FAIL'} `{check}` catches: {rel}: {expected}")
            if not ok:
                problems.append(f"`{check}` did not report {expected!r} for a broken {rel}: exit {res.returncode}\n{out}")
    return fail(problems, "self-test")


def main(argv: list[str]) -> int:
    commands = {
        "metrics": cmd_metrics,
        "rules": cmd_rules,
        "runbooks": cmd_runbooks,
        "tests": cmd_tests,
        "readme": cmd_readme,
        "mutants": lambda: cmd_mutants("--all" in argv[1:]),
        "selftest": cmd_selftest,
    }
    if not argv or argv[0] not in commands:
        print(__doc__, file=sys.stderr)
        return 2
    return commands[argv[0]]()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
