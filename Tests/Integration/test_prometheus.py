"""The monitoring bundle against a real Prometheus: Debian's `prometheus` scrapes a real
`lifeguard run` in front of the real PostgreSQL every second and evaluates alerts/*.yml every second.

- Every PromQL expression of dashboards/ (`check_dashboards.py --list-exprs`) and of alerts/ (each rule's `expr`,
  and the queries the annotations run) evaluates through /api/v1/query without an error (a parse error, a
  many-to-many join), every metric it names is one that Prometheus has (emitted by the exporter, or recorded by
  alerts/), and every recording rule, annotation query and dashboard expression returns data — except what needs
  series this setup cannot have (below). Every rule group loads and every rule evaluates with health ok, and a
  healthy idle sidecar raises no alert.
- Six clients looping over `BEGIN; SELECT pg_sleep(0.5); COMMIT` through a transaction pool of 2 + 1 overflow keep
  it exhausted with clients waiting: LifeguardPoolExhausted and LifeguardPoolClientsWaiting go pending (their `for:`
  is 1m and 5m, longer than the test) and stay pending, without a gap, for 15 s; both show up in the ALERTS series;
  and every expression still evaluates with the histograms and rates filled.
"""

from __future__ import annotations

import threading
import time

import psycopg
import pytest

import harness
import prometheus

POOL_ARGS = ("--pool-mode", "transaction", "--pool-size", "2", "--max-overflow", "1", "--pool-timeout", "3s")
POOL_LIMIT = 3  # pool_size + max_overflow
POOL = {"database": "appdb", "user": "app"}

# Series a correct setup may lack here, so expressions naming them may be empty and they may be absent from
# Prometheus: ALERTS exists only while an alert is pending or firing; pg_settings_max_connections comes from
# postgres_exporter, which this test does not run (lifeguard:database_max_connections falls back to 100 without it).
MAY_BE_ABSENT = {
    "ALERTS": "exists only while an alert is pending or firing",
    "pg_settings_max_connections": "postgres_exporter's; no postgres_exporter is scraped in this test",
    "lifeguard_tls_certificate_expiry_timestamp_seconds":
        "exported only with TLS (metrics_web_config); test_metrics_web.py has Prometheus scrape it over HTTPS",
}

EXHAUSTED = "LifeguardPoolExhausted"
WAITING = "LifeguardPoolClientsWaiting"
CLIENTS = 6
SLEEP = 0.5  # each transaction's pg_sleep: waits stay well under pool_timeout (3s)
LOAD_DEADLINE = 40  # seconds of load at most
HOLD = 15  # seconds both alerts must stay active (same activeAt) under load: the pool stays exhausted


@pytest.fixture
def prometheus_server(tmp_path):
    """Starts nothing by itself: `prometheus_server(targets)` starts one; it is always stopped at the end."""
    servers: list[prometheus.PrometheusServer] = []

    def start(scrape_targets: list[str]) -> prometheus.PrometheusServer:
        server = prometheus.PrometheusServer(tmp_path, scrape_targets)
        servers.append(server)
        server.start()
        return server

    yield start
    hung = []
    for server in servers:
        server.stop()
        if server.killed:
            hung.append(f"prometheus (pid {server.proc.pid}) ignored SIGTERM and was killed\n{server.log_tail()}")
    if hung:
        pytest.fail("\n".join(hung), pytrace=False)


def start_stack(lifeguard, postgres, prometheus_server):
    """lifeguard run in front of PostgreSQL, and Prometheus scraping it with the rules loaded and evaluated."""
    lg = lifeguard(*POOL_ARGS, upstream=postgres.dsn())
    prom = prometheus_server([f"{harness.LOOPBACK}:{lg.metrics_port}"])
    sockets = prom.listening_sockets()
    assert sockets == {(harness.LOOPBACK, prom.port)}, f"prometheus listens on {sockets}, expected only its port"
    prom.wait_targets_up()
    # rate() and increase() need two samples in their window; 3 scrapes leave a margin.
    harness.wait_until(lambda: prom.query(f'count_over_time(up{{job="{prometheus.JOB}"}}[1m]) >= 3'), 15,
                       interval=0.2, what="three scrapes of lifeguard")
    groups = prom.wait_rules_evaluated(after=time.time())
    return lg, prom, groups


def check_rules_loaded(groups: list[dict]) -> None:
    loaded = {g["name"] for g in groups}
    expected = prometheus.rule_groups()
    missing = [name for name in expected if name not in loaded]
    assert not missing, f"rule groups of alerts/ not loaded by prometheus: {missing} (loaded: {sorted(loaded)})"
    unhealthy = [(g["name"], r["name"], r["health"], r.get("lastError")) for g in groups for r in g["rules"]
                 if r["health"] != "ok"]
    assert not unhealthy, "rules that do not evaluate cleanly:\n" + "\n".join(map(str, unhealthy))


def active_alerts(prom) -> dict[str, dict]:
    """alertname -> the alert (state, activeAt) of the alerts that are pending or firing, for our pool."""
    found = {}
    for alert in prom.alerts():
        labels = alert["labels"]
        if alert["state"] in ("pending", "firing") and all(labels.get(k) == v for k, v in POOL.items()):
            found[labels["alertname"]] = alert
    return found


def evaluate_all(prom, exprs: list[dict], present: set[str],
                 require_data: bool = True) -> tuple[list[str], list[str], list[str]]:
    """Evaluates every expression; returns (errors, unknown metric names, expressions without data)."""
    errors, unknown, empty = [], [], []
    for e in exprs:
        where = f"{e['file']}: {e['where']}: {e['promql']}"
        try:
            result = prom.query(e["promql"])
        except prometheus.PrometheusError as error:
            errors.append(f"{where}\n    -> {error}")
            continue
        names = prometheus.metric_names(e["promql"])
        for name in sorted(names - present - set(MAY_BE_ABSENT)):
            unknown.append(f"{where}\n    -> {name} is not a metric prometheus has")
        # Alert expressions are empty when all is well; everything else shows data on a scraped sidecar.
        if require_data and e.get("kind") != "alert" and not result and not names & set(MAY_BE_ABSENT):
            empty.append(where)
    return errors, unknown, empty


def all_expressions() -> list[dict]:
    labels = {"job": prometheus.JOB}
    return prometheus.dashboard_expressions() + prometheus.rule_expressions(labels)


def test_every_dashboard_and_rule_expression_evaluates_on_real_scrapes(lifeguard, postgres, prometheus_server):
    _, prom, groups = start_stack(lifeguard, postgres, prometheus_server)
    check_rules_loaded(groups)

    present = prom.metric_names()
    # The catalogue reached Prometheus through a real scrape, and alerts/ recorded every series it defines.
    assert "lifeguard_pool_checked_out" in present, f"no lifeguard series scraped: {sorted(present)}"
    not_recorded = prometheus.recording_rules() - present
    assert not not_recorded, f"recording rules of alerts/ that produced no series: {sorted(not_recorded)}"

    exprs = all_expressions()
    kinds = {k: sum(1 for e in exprs if e.get("kind", "dashboard") == k)
             for k in ("dashboard", "record", "alert", "annotation")}
    assert kinds["dashboard"] >= 20 and kinds["alert"] >= 10, f"too few expressions found: {kinds}"
    errors, unknown, empty = evaluate_all(prom, exprs, present)
    problems = []
    if errors:
        problems.append(f"{len(errors)} expression(s) rejected by prometheus:\n" + "\n".join(errors))
    if unknown:
        problems.append(f"{len(unknown)} reference(s) to metrics that neither the exporter nor alerts/ produce "
                        f"(prometheus has: {', '.join(sorted(present))}):\n" + "\n".join(unknown))
    if empty:
        problems.append(f"{len(empty)} expression(s) without data on a scraped sidecar:\n" + "\n".join(empty))
    assert not problems, f"of {len(exprs)} expressions {kinds}:\n" + "\n\n".join(problems)

    # A healthy idle sidecar: no alert at all.
    quiet = prom.alerts()
    assert not quiet, f"alerts active on a healthy idle sidecar: {quiet}"


class Load:
    """CLIENTS threads, each on its own connection through the proxy, looping over a transaction that holds a
    server connection for SLEEP seconds; errors are counted (and the client reconnects), not raised."""

    def __init__(self, dsn: str):
        self.dsn = dsn
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.transactions = 0
        self.errors: list[str] = []
        self.threads = [threading.Thread(target=self.client, daemon=True) for _ in range(CLIENTS)]

    def client(self) -> None:
        conn = None
        while not self.stopping.is_set():
            try:
                if conn is None:
                    conn = psycopg.connect(self.dsn, autocommit=True, prepare_threshold=None, connect_timeout=10)
                conn.execute("BEGIN")
                conn.execute(f"SELECT pg_sleep({SLEEP})")
                conn.execute("COMMIT")
                with self.lock:
                    self.transactions += 1
            except psycopg.Error as e:
                with self.lock:
                    self.errors.append(f"{type(e).__name__}: {str(e).strip()}")
                if conn is not None:
                    conn.close()
                conn = None
                self.stopping.wait(0.2)
        if conn is not None:
            conn.close()

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stopping.set()
        for t in self.threads:
            t.join(SLEEP + 15)

    def summary(self) -> str:
        with self.lock:
            errors = self.errors[:5]
            return f"{self.transactions} transactions, {len(self.errors)} client errors {errors}"


def test_exhaustion_and_waiting_alerts_go_pending_under_load(lifeguard, postgres, prometheus_server):
    lg, prom, groups = start_stack(lifeguard, postgres, prometheus_server)
    check_rules_loaded(groups)
    dsn = postgres.kv_dsn(port=lg.listen_port)
    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    except psycopg.Error as e:
        pytest.fail(f"lifeguard does not proxy a query on 127.0.0.1:{lg.listen_port}: {e}\n{lg.describe()}",
                    pytrace=False)
    assert not active_alerts(prom), f"alerts active before the load: {active_alerts(prom)}"

    # An alert that stays pending keeps its activeAt; one that resolves, even for one evaluation, comes back with a
    # new one. The load lasts until both have kept theirs for HOLD seconds (or LOAD_DEADLINE passes).
    first_seen: dict[str, dict] = {}
    restarts = 0
    held_for = 0.0
    last: dict[str, dict] = {}
    load_start = time.time()
    with Load(dsn) as load:
        deadline = time.monotonic() + LOAD_DEADLINE
        held_since = None
        while time.monotonic() < deadline:
            last = active_alerts(prom)
            for name in (EXHAUSTED, WAITING):
                if name in last and name not in first_seen:
                    first_seen[name] = last[name]
            held = {n: last[n]["activeAt"] for n in (EXHAUSTED, WAITING) if n in last}
            if len(held) == 2:
                if held_since is None or held != held_since[1]:
                    restarts += held_since is not None
                    held_since = (time.monotonic(), held)
                held_for = time.monotonic() - held_since[0]
                if held_for >= HOLD:
                    break
            else:
                restarts += held_since is not None
                held_since = None
                held_for = 0.0
            time.sleep(0.5)
    load_end = time.time()
    window = f"{max(int(load_end - load_start) + 2, 5)}s"
    pool_selector = f'job="{prometheus.JOB}", database="appdb", user="app"'

    def peak(metric: str) -> str:
        result = prom.query(f"max_over_time({metric}{{{pool_selector}}}[{window}])")
        return result[0]["value"][1] if result else "no data"

    def states(alerts: dict[str, dict]) -> dict[str, tuple[str, str]]:
        return {n: (a["state"], a["activeAt"]) for n, a in alerts.items()}

    observed = (f"load: {load.summary()}; peak checked_out {peak('lifeguard_pool_checked_out')} (limit "
                f"{POOL_LIMIT}), peak waiting_clients {peak('lifeguard_pool_waiting_clients')}; alerts first seen: "
                f"{states(first_seen)}; both active for {held_for:.1f}s after {restarts} restart(s); at the end: "
                f"{states(last)}")
    print(observed)  # shown by pytest -s or on a failure
    for name in (EXHAUSTED, WAITING):
        assert name in first_seen, f"{name} never reached pending or firing in {LOAD_DEADLINE}s of load; {observed}"
    assert held_for >= HOLD, (
        f"{EXHAUSTED} and {WAITING} were not both pending or firing for {HOLD}s in a row while the pool was kept "
        f"exhausted; {observed}")

    # The alerts reached the ALERTS series that the dashboards' annotation reads.
    alerts_series = prom.query(f'max_over_time(ALERTS{{alertname=~"{EXHAUSTED}|{WAITING}", {pool_selector}}}'
                               f"[{window}])")
    assert {s["metric"]["alertname"] for s in alerts_series} == {EXHAUSTED, WAITING}, alerts_series

    # Under load, with histograms filled, every expression still evaluates (no data required: this is a second
    # look at the joins with waits, timeouts and rates that are not zero).
    exprs = all_expressions()
    errors, unknown, _ = evaluate_all(prom, exprs, prom.metric_names(), require_data=False)
    assert not errors and not unknown, "under load:\n" + "\n".join(errors + unknown)
