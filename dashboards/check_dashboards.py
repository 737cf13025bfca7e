#!/usr/bin/env python3
"""Checks the Grafana dashboards in dashboards/ and lists their PromQL.

    check_dashboards.py                       check structure, metric names, labels and label values; exit 1 on a problem
    check_dashboards.py --list-exprs          print every PromQL expression as JSON (for evaluation against a Prometheus)
    check_dashboards.py --rules-file FILE     also write the expressions as recording rules, for `promtool check rules`

What is checked (the file's own rules, so that a renamed metric or a hard-coded data source fails the build):
- every dashboard parses, has a unique uid and title, schemaVersion >= 38, no numeric id;
- the templating has a `datasource` variable of type datasource (query prometheus) and query variables job, instance,
  database and user, each a `label_values(...)` on the `${datasource}` data source;
- no data source is referenced by a literal uid: every `datasource` is `${datasource}` (or Grafana's built-in
  annotation source), on every panel and every target; every non-row panel has at least one non-empty target;
- panel ids are unique and panels do not overlap;
- every metric an expression uses (panels, annotations, variables) is in docs/metrics.md's catalogue (histograms as
  _bucket, _sum, _count), is `up` or `ALERTS`, is `pg_settings_max_connections` (postgres_exporter), or is a
  recording rule defined in alerts/*.yml; label names in selectors belong to that metric (plus job, instance, le);
  exact label values are in the catalogue's label-values table; grouping labels and {{legend}} labels exist;
- the overview charts every metric family of the catalogue;
- the alert annotation's alertname pattern matches every alert defined in alerts/*.yml.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OVERVIEW = "lifeguard-overview.json"
REQUIRED_VARIABLES = ("job", "instance", "database", "user")
DATASOURCE = "${datasource}"
BUILTIN_ANNOTATION_DS = {"type": "grafana", "uid": "-- Grafana --"}

# Metrics the dashboards may use besides the catalogue: labels allowed on each (None: any).
EXTERNAL_METRICS: dict[str, set[str] | None] = {
    "up": {"job", "instance"},
    "ALERTS": None,  # carries the alert's own labels
    "pg_settings_max_connections": None,  # postgres_exporter; its labels depend on the exporter's setup
}
TARGET_LABELS = {"job", "instance"}

# What Grafana puts in place of its variables when it runs a query; all our variables' "All" value is ".*".
GRAFANA_BUILTINS = {"__rate_interval": "1m", "__interval": "30s", "__range": "1h", "__range_s": "3600"}

PROMQL_KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset",
    "inf", "nan", "start", "end",
}
PROMQL_AGGREGATIONS = {
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk", "topk", "quantile",
}
PROMQL_FUNCTIONS = PROMQL_AGGREGATIONS | {
    "abs", "absent", "absent_over_time", "ceil", "changes", "clamp", "clamp_max", "clamp_min", "day_of_month",
    "day_of_week", "day_of_year", "days_in_month", "delta", "deriv", "exp", "floor", "histogram_quantile",
    "holt_winters", "hour", "idelta", "increase", "irate", "label_join", "label_replace", "ln", "log2", "log10",
    "minute", "month", "predict_linear", "rate", "resets", "round", "scalar", "sgn", "sort", "sort_desc", "sqrt",
    "time", "timestamp", "vector", "year", "avg_over_time", "min_over_time", "max_over_time", "sum_over_time",
    "count_over_time", "quantile_over_time", "stddev_over_time", "stdvar_over_time", "last_over_time",
    "present_over_time",
}


class Problems(list):
    def add(self, where: str, message: str) -> None:
        self.append(f"{where}: {message}")


# ----------------------------------------------------------------------------------------------------------------
# The catalogue (docs/metrics.md) and the recording rules (alerts/*.yml)


def load_catalogue(path: Path) -> tuple[dict[str, set[str]], dict[tuple[str, str], set[str]], list[str]]:
    """Returns ({series: label names}, {(metric, label): allowed values}, [family names in order]) from metrics.md."""
    series: dict[str, set[str]] = {}
    families: list[str] = []
    values: dict[tuple[str, str], set[str]] = {}
    section = ""
    for line in path.read_text().splitlines():
        if line.startswith("## "):
            section = line[3:].strip()
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("|") else []
        if section == "Reference" and len(cells) >= 3 and cells[0].startswith("`"):
            name, kind = cells[0].strip("`"), cells[1]
            labels = set(re.findall(r"`([a-z_]+)`", cells[2]))
            families.append(name)
            if kind == "histogram":
                series[name + "_bucket"] = labels | {"le"}
                series[name + "_sum"] = labels
                series[name + "_count"] = labels
            else:
                series[name] = labels
        elif section == "Label values" and len(cells) >= 3 and cells[0].startswith("`"):
            metric, label = cells[0].strip("`"), cells[1].strip("`")
            values.setdefault((metric, label), set()).update(re.findall(r"`([^`]+)`", cells[2]))
    if not families:
        raise SystemExit(f"{path}: no metric found in its '## Reference' table")
    return series, values, families


def load_alert_rules(alerts_dir: Path) -> tuple[set[str], list[str]]:
    """Returns (recording rule names, alert names) defined in alerts/*.yml (rule files: a top-level `groups`)."""
    records: set[str] = set()
    alerts: list[str] = []
    if not alerts_dir.is_dir():
        return records, alerts
    import yaml  # only needed when alerts/ exists; the project's .venv has PyYAML

    for path in sorted(list(alerts_dir.glob("*.yml")) + list(alerts_dir.glob("*.yaml"))):
        doc = yaml.safe_load(path.read_text())
        if not isinstance(doc, dict) or "groups" not in doc:
            continue  # a promtool unit-test file, not a rule file
        for group in doc.get("groups") or []:
            for rule in group.get("rules") or []:
                if "record" in rule:
                    records.add(rule["record"])
                if "alert" in rule:
                    alerts.append(rule["alert"])
    return records, alerts


# ----------------------------------------------------------------------------------------------------------------
# PromQL: Grafana substitution and a light lexical analysis (no full parser: promtool and the live test do that)


def substitute(expr: str, variables: set[str]) -> str:
    """What Grafana sends to Prometheus with every variable at its "All" value (".*")."""

    def repl(match: re.Match) -> str:
        name = match.group(1) or match.group(2)
        if name in GRAFANA_BUILTINS:
            return GRAFANA_BUILTINS[name]
        if name in variables:
            return ".*"
        return match.group(0)

    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", repl, expr)


STRING_RE = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
MATCHER_RE = re.compile(r'([a-zA-Z_]\w*)\s*(=~|!~|!=|=)\s*("(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\')')
GROUPING_RE = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^()]*)\)")


def analyse(expr: str) -> tuple[list[tuple[str, list[tuple[str, str, str]]]], set[str], set[str], list[str]]:
    """Returns (selectors as (metric, [(label, op, value)]), grouping labels, functions, problems) of an expression."""
    problems: list[str] = []
    selectors: list[tuple[str, list[tuple[str, str, str]]]] = []
    # Selectors with matchers: the metric name before a {...} (or none: a bare {...} selector, refused).
    for m in re.finditer(r"([a-zA-Z_:][\w:]*)?\s*\{([^{}]*)\}", expr):
        metric, body = m.group(1), m.group(2)
        matchers = [(lm.group(1), lm.group(2), json.loads(lm.group(3)) if lm.group(3)[0] == '"' else lm.group(3)[1:-1])
                    for lm in MATCHER_RE.finditer(body)]
        rest = MATCHER_RE.sub("", body).replace(",", "").strip()
        if rest:
            problems.append(f"cannot read the label matchers {{{body}}}")
        if not metric or metric in PROMQL_KEYWORDS:
            problems.append(f"selector without a metric name: {{{body}}}")
            continue
        selectors.append((metric, matchers))
    text = re.sub(r"\{[^{}]*\}", " ", expr)
    text = STRING_RE.sub(" ", text)
    grouping: set[str] = set()
    for g in GROUPING_RE.finditer(text):
        grouping.update(x.strip() for x in g.group(2).split(",") if x.strip())
    text = GROUPING_RE.sub(" ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges and subqueries
    text = re.sub(r"\boffset\s+-?\w+", " ", text)
    text = re.sub(r"(?<![\w.])\d+(?:\.\d+)?(?:[eE][-+]?\d+)?(?![\w.])", " ", text)  # numbers
    functions: set[str] = set()
    for m in re.finditer(r"[a-zA-Z_:][\w:]*", text):
        word = m.group(0)
        following = text[m.end():].lstrip()
        if following.startswith("("):
            functions.add(word)
        elif word.lower() in PROMQL_KEYWORDS:
            continue
        elif word not in (s[0] for s in selectors):
            selectors.append((word, []))
    return selectors, grouping, functions, problems


# ----------------------------------------------------------------------------------------------------------------
# Dashboards


def walk_panels(panels: list) -> list[dict]:
    out = []
    for panel in panels or []:
        out.append(panel)
        out.extend(walk_panels(panel.get("panels", [])))
    return out


def datasource_refs(node, path="$"):
    """Yields (path, value) for every `datasource` key anywhere in the dashboard."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "datasource":
                yield f"{path}.{key}", value
            yield from datasource_refs(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from datasource_refs(value, f"{path}[{i}]")


def is_our_datasource(value) -> bool:
    if value == DATASOURCE:
        return True
    return isinstance(value, dict) and value.get("uid") == DATASOURCE and value.get("type", "prometheus") == "prometheus"


def variable_query(variable: dict) -> str:
    query = variable.get("query")
    if isinstance(query, dict):
        query = query.get("query", "")
    return query or ""


def collect(dashboard: dict, file: str, problems: Problems) -> list[dict]:
    """Checks one dashboard's structure; returns its expressions as {file, where, expr}."""
    exprs: list[dict] = []
    if not isinstance(dashboard.get("schemaVersion"), int) or dashboard["schemaVersion"] < 38:
        problems.add(file, f"schemaVersion must be >= 38 (Grafana 10+), got {dashboard.get('schemaVersion')!r}")
    if dashboard.get("id") is not None:
        problems.add(file, "a numeric `id` pins the dashboard to one Grafana database: set it to null")
    for key in ("uid", "title"):
        if not dashboard.get(key):
            problems.add(file, f"missing {key}")
    if len(dashboard.get("uid", "")) > 40:
        problems.add(file, "uid longer than 40 characters")

    for where, value in datasource_refs(dashboard):
        if is_our_datasource(value):
            continue
        if value == BUILTIN_ANNOTATION_DS and where.startswith("$.annotations"):
            continue
        problems.add(file, f"{where} is {json.dumps(value)}: use {{\"type\": \"prometheus\", \"uid\": \"{DATASOURCE}\"}}")

    variables = {v.get("name"): v for v in dashboard.get("templating", {}).get("list", [])}
    ds = variables.get("datasource")
    if not ds or ds.get("type") != "datasource" or ds.get("query") != "prometheus":
        problems.add(file, "templating needs a variable `datasource` of type datasource with query `prometheus`")
    for name in REQUIRED_VARIABLES:
        if name not in variables:
            problems.add(file, f"templating lacks the variable `{name}`")
    for name, variable in variables.items():
        if variable.get("type") != "query":
            continue
        query = variable_query(variable)
        where = f"variable {name}"
        if not is_our_datasource(variable.get("datasource")):
            problems.add(file, f"{where}: its datasource must be {DATASOURCE}")
        m = re.fullmatch(r"\s*label_values\((.*),\s*([a-zA-Z_]\w*)\s*\)\s*", query, re.S)
        if not m:
            problems.add(file, f"{where}: expected label_values(metric_or_selector, label), got {query!r}")
            continue
        exprs.append({"file": file, "where": where, "expr": m.group(1).strip(), "label": m.group(2)})

    for i, annotation in enumerate(dashboard.get("annotations", {}).get("list", [])):
        if annotation.get("builtIn"):
            continue
        if not annotation.get("expr"):
            problems.add(file, f"annotation {annotation.get('name', i)!r} has no expr")
            continue
        exprs.append({"file": file, "where": f"annotation {annotation.get('name', i)!r}", "expr": annotation["expr"]})

    ids: set[int] = set()
    cells: set[tuple[int, int]] = set()
    for panel in walk_panels(dashboard.get("panels", [])):
        title = panel.get("title", "?")
        where = f"panel {panel.get('id')} {title!r}"
        if panel.get("id") in ids:
            problems.add(file, f"{where}: duplicate panel id")
        ids.add(panel.get("id"))
        grid = panel.get("gridPos") or {}
        if not all(isinstance(grid.get(k), int) for k in ("x", "y", "w", "h")):
            problems.add(file, f"{where}: gridPos needs integer x, y, w, h")
        else:
            if grid["x"] + grid["w"] > 24:
                problems.add(file, f"{where}: wider than the 24-column grid")
            for x in range(grid["x"], grid["x"] + grid["w"]):
                for y in range(grid["y"], grid["y"] + grid["h"]):
                    if (x, y) in cells:
                        problems.add(file, f"{where}: overlaps another panel at x={x} y={y}")
                        break
                    cells.add((x, y))
                else:
                    continue
                break
        if panel.get("type") == "row":
            continue
        if not is_our_datasource(panel.get("datasource")):
            problems.add(file, f"{where}: panel datasource must be {DATASOURCE}")
        targets = panel.get("targets") or []
        if not targets:
            problems.add(file, f"{where}: no targets")
        for target in targets:
            twhere = f"{where} target {target.get('refId', '?')}"
            if not is_our_datasource(target.get("datasource")):
                problems.add(file, f"{twhere}: datasource must be {DATASOURCE}")
            if not (target.get("expr") or "").strip():
                problems.add(file, f"{twhere}: empty expr")
                continue
            exprs.append({"file": file, "where": twhere, "expr": target["expr"],
                          "legend": target.get("legendFormat", "")})
    for e in exprs:
        e["promql"] = substitute(e["expr"], set(variables))
    return exprs


def check_expressions(exprs, series, values, records, problems: Problems) -> set[str]:
    """Checks metric names, labels and label values; returns the metric names used."""
    known_labels = set().union(*series.values()) | TARGET_LABELS | {"le"}
    used: set[str] = set()
    for e in exprs:
        if "$" in e["promql"]:
            problems.add(e["file"], f"{e['where']}: unknown Grafana variable left in {e['promql']!r}")
        selectors, grouping, functions, lexical = analyse(e["promql"])
        for message in lexical:
            problems.add(e["file"], f"{e['where']}: {message}")
        for function in functions - PROMQL_FUNCTIONS:
            problems.add(e["file"], f"{e['where']}: unknown PromQL function {function}()")
        if not selectors:
            problems.add(e["file"], f"{e['where']}: no metric in {e['expr']!r}")
        for metric, matchers in selectors:
            used.add(metric)
            if metric in series:
                allowed = series[metric] | TARGET_LABELS
            elif metric in EXTERNAL_METRICS:
                allowed = EXTERNAL_METRICS[metric]
            elif metric in records:
                allowed = None
            else:
                problems.add(e["file"], f"{e['where']}: metric {metric} is not in docs/metrics.md (nor up, ALERTS, "
                             f"pg_settings_max_connections or a recording rule in alerts/)")
                continue
            for label, op, value in matchers:
                if allowed is not None and label not in allowed:
                    problems.add(e["file"], f"{e['where']}: {metric} has no label {label!r} "
                                 f"(it has {', '.join(sorted(allowed))})")
                allowed_values = values.get((metric, label))
                if op in ("=", "!=") and allowed_values is not None and value not in allowed_values:
                    problems.add(e["file"], f"{e['where']}: {label}={value!r} is not a value of {metric}'s {label} "
                                 f"({', '.join(sorted(allowed_values))})")
        if grouping - known_labels:
            problems.add(e["file"], f"{e['where']}: groups by unknown label(s) {sorted(grouping - known_labels)}")
        if "label" in e and e["label"] not in known_labels:
            problems.add(e["file"], f"{e['where']}: label_values of unknown label {e['label']!r}")
        legend_labels = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", e.get("legend", "")))
        if legend_labels - known_labels:
            problems.add(e["file"], f"{e['where']}: legend uses unknown label(s) {sorted(legend_labels - known_labels)}")
    return used


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dashboards", type=Path, default=ROOT / "dashboards")
    parser.add_argument("--metrics-doc", type=Path, default=ROOT / "docs" / "metrics.md")
    parser.add_argument("--alerts", type=Path, default=ROOT / "alerts")
    parser.add_argument("--list-exprs", action="store_true", help="print the expressions as JSON and exit")
    parser.add_argument("--rules-file", type=Path, help="write the expressions as recording rules to this file")
    args = parser.parse_args()

    series, values, families = load_catalogue(args.metrics_doc)
    records, alert_names = load_alert_rules(args.alerts)
    problems = Problems()
    exprs: list[dict] = []
    uids: dict[str, str] = {}
    titles: dict[str, str] = {}
    files = sorted(args.dashboards.glob("*.json"))
    if not files:
        problems.add(str(args.dashboards), "no dashboard (*.json)")
    dashboards = {}
    for path in files:
        try:
            dashboard = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            problems.add(path.name, f"not JSON: {error}")
            continue
        dashboards[path.name] = dashboard
        for key, seen in (("uid", uids), ("title", titles)):
            value = dashboard.get(key)
            if value in seen:
                problems.add(path.name, f"{key} {value!r} is also the {key} of {seen[value]}")
            seen[value] = path.name
        exprs.extend(collect(dashboard, path.name, problems))

    if args.list_exprs:
        json.dump([{k: e[k] for k in ("file", "where", "expr", "promql")} for e in exprs], sys.stdout, indent=2)
        print()
        return 0

    used = check_expressions(exprs, series, values, records, problems)

    if OVERVIEW in dashboards:
        overview_used = check_expressions([e for e in exprs if e["file"] == OVERVIEW], series, values, records,
                                          Problems())
        for family in families:
            names = {family, family + "_bucket", family + "_sum", family + "_count"}
            if not names & overview_used:
                problems.add(OVERVIEW, f"the catalogue's {family} is on no panel of the overview")
    else:
        problems.add(str(args.dashboards), f"{OVERVIEW} is missing")

    # The alert annotation must show every alert we ship.
    patterns = []
    for e in exprs:
        if e["where"].startswith("annotation"):
            for metric, matchers in analyse(e["promql"])[0]:
                if metric == "ALERTS":
                    patterns += [(e["file"], value) for label, op, value in matchers if label == "alertname"
                                 and op == "=~"]
    if not patterns:
        problems.add("dashboards", "no annotation on ALERTS{alertname=~...}")
    for file, pattern in patterns:
        for name in alert_names:
            if not re.fullmatch(pattern, name):
                problems.add(file, f"the alert annotation's alertname=~{pattern!r} does not match alert {name} "
                             f"from alerts/")

    if args.rules_file:
        rules = [{"record": f"dashboard:expr_{i}", "expr": e["promql"]} for i, e in enumerate(exprs)]
        # JSON is YAML: no PyYAML needed here.
        args.rules_file.write_text(json.dumps({"groups": [{"name": "dashboards", "rules": rules}]}, indent=1))

    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    external = sorted(used - set(series))
    print(f"{len(files)} dashboards, {len(exprs)} expressions, {len(used)} metrics "
          f"({len(used & set(series))} from the catalogue; others: {', '.join(external) or 'none'}), "
          f"{len(alert_names)} alerts matched by the annotation, {len(records)} recording rules known: "
          f"{'OK' if not problems else f'{len(problems)} problem(s)'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
