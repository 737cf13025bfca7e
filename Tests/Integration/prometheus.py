"""A throwaway Prometheus (Debian's /usr/bin/prometheus) for the end-to-end test of alerts/ and dashboards/
and the PromQL those ship.

`PrometheusServer(workdir, scrape_targets)` writes a config that scrapes the targets as job `lifeguard` every second,
evaluates the repository's rule files every second, listens on 127.0.0.1 only and keeps its TSDB in workdir; its
methods wrap the HTTP API (/api/v1/query, targets, rules, alerts, metric names). `rule_expressions()` and
`dashboard_expressions()` list every expression the bundle ships; `metric_names(expr)` names the metrics one refers
to (with the lexer of dashboards/check_dashboards.py, the same one the offline checks use).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
from datetime import datetime
from pathlib import Path
from typing import Mapping

import yaml

import harness

PROMETHEUS = Path(os.environ.get("LIFEGUARD_PROMETHEUS") or shutil.which("prometheus") or "/usr/bin/prometheus")
ALERTS_DIR = harness.ROOT / "alerts"
DASHBOARDS_CHECK = harness.ROOT / "dashboards" / "check_dashboards.py"
JOB = "lifeguard"  # matches the rules' job=~"lifeguard.*"
INTERVAL = "1s"


class PrometheusError(AssertionError):
    """The HTTP API answered with an error (a parse error is errorType bad_data)."""


def _load_check_dashboards():
    spec = importlib.util.spec_from_file_location("check_dashboards", DASHBOARDS_CHECK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_check_dashboards = _load_check_dashboards()


# ---------------------------------------------------------------------------------------------------------------
# What the bundle ships


def rule_files() -> list[Path]:
    """alerts/*.yml that are rule files (a top-level `groups`), sorted."""
    files = []
    for path in sorted(ALERTS_DIR.glob("*.yml")):
        doc = yaml.safe_load(path.read_text())
        if isinstance(doc, dict) and "groups" in doc:
            files.append(path)
    return files


def rule_groups() -> list[str]:
    return [group["name"] for path in rule_files() for group in yaml.safe_load(path.read_text())["groups"]]


def recording_rules() -> set[str]:
    return {rule["record"] for path in rule_files() for group in yaml.safe_load(path.read_text())["groups"]
            for rule in group["rules"] if "record" in rule}


# `{{ with printf "lifeguard:threshold:NAME{job=%q}" $labels.job | query }}` in the annotations.
_ANNOTATION_QUERY_RE = re.compile(r'printf\s+"((?:[^"\\]|\\.)*)"\s+\$labels\.(\w+)\s*\|\s*query')


def rule_expressions(labels: Mapping[str, str]) -> list[dict]:
    """Every `expr` of alerts/*.yml ({file, where, promql, kind: record|alert}), and every query an annotation runs
    (kind: annotation), with the alert's $labels.X filled in from labels."""
    exprs = []
    for path in rule_files():
        for group in yaml.safe_load(path.read_text())["groups"]:
            for i, rule in enumerate(group["rules"]):
                kind = "record" if "record" in rule else "alert"
                where = f"group {group['name']} rule {i} {rule.get('record') or rule.get('alert')}"
                exprs.append({"file": path.name, "where": where, "promql": rule["expr"].strip(), "kind": kind})
                for key, text in (rule.get("annotations") or {}).items():
                    for m in _ANNOTATION_QUERY_RE.finditer(text):
                        fmt = json.loads(f'"{m.group(1)}"')
                        promql = fmt.replace("%q", json.dumps(labels[m.group(2)]))
                        exprs.append({"file": path.name, "where": f"{where} annotation {key}", "promql": promql,
                                      "kind": "annotation"})
    return exprs


def dashboard_expressions() -> list[dict]:
    """`check_dashboards.py --list-exprs`: every PromQL of dashboards/ ({file, where, expr, promql}), Grafana
    variables substituted (`.*` for ours, 1m for $__rate_interval)."""
    r = subprocess.run([sys.executable, str(DASHBOARDS_CHECK), "--list-exprs"], capture_output=True, text=True,
                       timeout=60)
    if r.returncode != 0:
        raise AssertionError(f"check_dashboards.py --list-exprs failed ({r.returncode}):\n{r.stderr}")
    return json.loads(r.stdout)


def metric_names(promql: str) -> set[str]:
    """The metric names an expression selects."""
    selectors, _, _, problems = _check_dashboards.analyse(promql)
    if problems:
        raise AssertionError(f"cannot read the selectors of {promql!r}: {problems}")
    return {metric for metric, _ in selectors}


# ---------------------------------------------------------------------------------------------------------------
# Sockets




# ---------------------------------------------------------------------------------------------------------------
# The server


class PrometheusServer:
    """Prometheus on 127.0.0.1:free port, TSDB in workdir, scraping `scrape_targets` (host:port) as job `lifeguard`
    with the rule files of alerts/. `scrape_options` go into the job's scrape config as they are (`scheme`,
    `tls_config`, `basic_auth`). `start()`, then the API methods; `stop()` always (SIGTERM, SIGKILL after 15 s)."""

    def __init__(self, workdir: Path, scrape_targets: list[str], rules: list[Path] | None = None,
                 scrape_options: Mapping[str, object] | None = None):
        self.workdir = Path(workdir) / "prometheus"
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.scrape_targets = scrape_targets
        self.scrape_options = dict(scrape_options or {})
        self.rules = rule_files() if rules is None else rules
        self.port: int | None = None
        self.proc: subprocess.Popen | None = None
        self.log = self.workdir / "prometheus.log"
        self.config = self.workdir / "prometheus.yml"
        self.killed = False

    def write_config(self) -> None:
        config = {
            "global": {"scrape_interval": INTERVAL, "scrape_timeout": INTERVAL, "evaluation_interval": INTERVAL},
            "rule_files": [str(p) for p in self.rules],
            "scrape_configs": [
                {"job_name": JOB, "static_configs": [{"targets": self.scrape_targets}], **self.scrape_options}
            ],
        }
        self.config.write_text(json.dumps(config, indent=1))  # JSON is YAML

    def start(self, timeout: float = 30) -> None:
        if not (PROMETHEUS.is_file() and os.access(PROMETHEUS, os.X_OK)):
            raise AssertionError(f"prometheus not found at {PROMETHEUS}: scripts/test installs Debian's prometheus")
        self.write_config()
        for attempt in range(3):  # another process may take the free port between the check and the bind
            self.port = harness.free_port()
            argv = [
                str(PROMETHEUS),
                f"--config.file={self.config}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address={harness.LOOPBACK}:{self.port}",
                "--storage.tsdb.retention.time=1h",
            ]
            with open(self.log, "ab") as log:
                self.proc = subprocess.Popen(argv, cwd=self.workdir, stdin=subprocess.DEVNULL, stdout=log,
                                             stderr=subprocess.STDOUT, env=harness.clean_env())
            if self._wait_ready(timeout):
                return
            if "address already in use" not in self.log_tail():
                break
        raise AssertionError(f"prometheus did not become ready on 127.0.0.1:{self.port}\n{self.log_tail()}")

    def _wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            with contextlib.suppress(OSError):
                if harness.http_request(self.port, "GET", "/-/ready", timeout=2).status == 200:
                    return True
            time.sleep(0.1)
        return False

    def stop(self, grace: float = 15) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.killed = True
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    def log_tail(self, lines: int = 40) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def listening_sockets(self) -> set[tuple[str, int]]:
        return harness.listening_sockets(self.proc.pid)

    # -- HTTP API

    def api(self, path: str, **params) -> object:
        """GET /api/v1/PATH?params; returns `data`, raises PrometheusError with Prometheus's message."""
        query = urllib.parse.urlencode(params, doseq=True)
        try:
            resp = harness.http_request(self.port, "GET", f"/api/v1/{path}" + (f"?{query}" if query else ""),
                                        timeout=10)
        except OSError as e:
            exited = self.proc.poll()
            raise AssertionError(f"prometheus API /api/v1/{path}: {e} (prometheus "
                                 f"{'running' if exited is None else f'exited with {exited}'})\n{self.log_tail()}"
                                 ) from None
        try:
            body = json.loads(resp.body)
        except json.JSONDecodeError:
            raise PrometheusError(f"/api/v1/{path}: HTTP {resp.status}, not JSON: {resp.body[:300]}") from None
        if body.get("status") != "success":
            raise PrometheusError(f"{body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, promql: str) -> list[dict]:
        """An instant query now; returns the result as a list of {metric, value} (a scalar as one element)."""
        data = self.api("query", query=promql)
        if data["resultType"] in ("vector", "matrix"):
            return data["result"]
        return [{"metric": {}, "value": data["result"]}]

    def targets(self) -> list[dict]:
        return self.api("targets", state="active")["activeTargets"]

    def rule_groups(self) -> list[dict]:
        return self.api("rules")["groups"]

    def alerts(self) -> list[dict]:
        return self.api("alerts")["alerts"]

    def metric_names(self) -> set[str]:
        return set(self.api("label/__name__/values"))

    # -- waiting

    def wait_targets_up(self, timeout: float = 20) -> list[dict]:
        """Until every target of job lifeguard has been scraped successfully."""
        last: list = []

        def up():
            targets = [t for t in self.targets() if t["labels"].get("job") == JOB]
            last[:] = targets
            return targets if targets and all(t["health"] == "up" for t in targets) else None

        try:
            return harness.wait_until(up, timeout, interval=0.2, what="the lifeguard scrape target up")
        except TimeoutError as e:
            described = [(t["scrapeUrl"], t["health"], t.get("lastError")) for t in last]
            raise AssertionError(f"{e}; targets: {described}\n{self.log_tail()}") from None

    def wait_rules_evaluated(self, after: float, timeout: float = 20) -> list[dict]:
        """Until every rule has been evaluated at least once after `after` (Unix time); returns the groups."""
        def rfc3339(text: str) -> float:
            # 2026-11-25T15:01:25.952123456Z: nanoseconds, which datetime does not parse.
            m = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)", text)
            if not m:
                return 0.0
            base = datetime.fromisoformat(m.group(1) + (m.group(3) if m.group(3) != "Z" else "+00:00"))
            return base.timestamp() + float(m.group(2) or 0)

        last: list = []

        def evaluated():
            groups = self.rule_groups()
            last[:] = groups
            rules = [r for g in groups for r in g["rules"]]
            return groups if rules and all(rfc3339(r.get("lastEvaluation", "")) > after for r in rules) else None

        try:
            return harness.wait_until(evaluated, timeout, interval=0.2, what="every rule evaluated")
        except TimeoutError as e:
            raise AssertionError(f"{e}; groups: {[g['name'] for g in last]}\n{self.log_tail()}") from None
