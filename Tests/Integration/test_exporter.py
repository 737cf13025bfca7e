"""`lifeguard run` in front of a real PostgreSQL: /metrics serves the whole catalogue of DESIGN.md at start-up,
promtool accepts it, and /healthz, /readyz and the HTTP error codes behave."""

from __future__ import annotations

import time

import harness

POOL = {"database": "appdb", "user": "app"}

# The catalogue (DESIGN.md). Gauges that count state start at 0; the configured ones are checked separately.
POOL_ZERO_GAUGES = ["lifeguard_pool_checked_out", "lifeguard_pool_overflow", "lifeguard_pool_waiting_clients",
                    "lifeguard_pool_paused"]
POOL_HISTOGRAMS = ["lifeguard_pool_wait_seconds", "lifeguard_pool_use_seconds", "lifeguard_pool_connect_seconds"]
POOL_COUNTERS = [
    "lifeguard_pool_checkouts_total",
    "lifeguard_pool_timeouts_total",
    "lifeguard_pool_leaks_suspected_total",
    "lifeguard_transactions_total",
    "lifeguard_queries_total",
]
CLOSE_REASONS = ["recycle", "idle", "ping_failed", "error", "overflow", "shutdown"]
CLIENT_STATES = ["active", "waiting", "idle"]
REJECT_REASONS = ["max_client_conn", "auth", "protocol"]
PROCESS_METRICS = [
    "process_resident_memory_bytes",
    "process_cpu_seconds_total",
    "process_open_fds",
    "process_start_time_seconds",
]


def start_against(lifeguard, postgres, *args):
    """lifeguard run against the session's PostgreSQL with a pool that opens nothing eagerly."""
    return lifeguard(
        "--min-size", "0", "--pool-size", "4", "--max-overflow", "2", "--max-client-conn", "77", *args,
        upstream=postgres.dsn(),
    )


def test_metrics_serves_the_whole_catalogue_at_zero(lifeguard, postgres):
    started = time.time()
    lg = start_against(lifeguard, postgres)
    resp = lg.get("/metrics")
    assert resp.status == 200
    assert resp.headers.get("content-type", "").replace(" ", "").startswith("text/plain;version=0.0.4")
    exp = harness.Exposition(resp.body)
    problems = []

    def expect(condition, message):
        if not condition:
            problems.append(message)

    def expect_value(name, expected, **labels):
        found = exp.find(name, **labels)
        if len(found) != 1:
            problems.append(f"{name}{labels}: expected one sample, found {len(found)}")
        elif found[0].value != expected:
            problems.append(f"{name}{labels} = {found[0].value}, expected {expected}")

    def expect_type(family, kind):
        expect(exp.type_of(family) == kind, f"# TYPE of {family} is {exp.type_of(family)!r}, expected {kind}")

    # Configured values, from the flags.
    for name, value in [("lifeguard_pool_size", 4), ("lifeguard_pool_max_overflow", 2)]:
        expect_type(name, "gauge")
        expect_value(name, value, **POOL)
    # State gauges at 0.
    expect_type("lifeguard_pool_connections", "gauge")
    for state in ["idle", "used"]:
        expect_value("lifeguard_pool_connections", 0, state=state, **POOL)
    for name in POOL_ZERO_GAUGES:
        expect_type(name, "gauge")
        expect_value(name, 0, **POOL)
    # Counters exist at 0 before the first event.
    for name in POOL_COUNTERS:
        expect_type(name, "counter")
        expect_value(name, 0, **POOL)
    expect_type("lifeguard_pool_connections_closed_total", "counter")
    for reason in CLOSE_REASONS:
        expect_value("lifeguard_pool_connections_closed_total", 0, reason=reason, **POOL)
    expect_type("lifeguard_pool_connection_errors_total", "counter")
    errors = exp.find("lifeguard_pool_connection_errors_total", **POOL)
    expect(errors and all("reason" in s.labels and s.value == 0 for s in errors),
           f"lifeguard_pool_connection_errors_total{{reason}} not present at 0: {errors}")
    # Histograms: empty, with buckets from 100 µs to at least 30 s for waits.
    for name in POOL_HISTOGRAMS:
        expect_type(name, "histogram")
        buckets = exp.find(f"{name}_bucket", **POOL)
        expect(buckets and all(s.value == 0 for s in buckets), f"{name}_bucket not present at 0: {buckets}")
        expect(float("inf") in harness.bucket_bounds(buckets), f"{name} has no +Inf bucket")
        expect_value(f"{name}_count", 0, **POOL)
        expect_value(f"{name}_sum", 0, **POOL)
    finite = [b for b in harness.bucket_bounds(exp.find("lifeguard_pool_wait_seconds_bucket", **POOL))
              if harness.is_finite(b)]
    expect(finite and finite[0] <= 0.0001 and finite[-1] >= 30,
           f"wait buckets do not span 100 µs .. 30 s: {finite}")
    # Client side.
    expect_type("lifeguard_client_connections", "gauge")
    for state in CLIENT_STATES:
        expect_value("lifeguard_client_connections", 0, state=state)
    expect_value("lifeguard_client_max_connections", 77)
    expect_type("lifeguard_client_rejected_total", "counter")
    for reason in REJECT_REASONS:
        expect_value("lifeguard_client_rejected_total", 0, reason=reason)
    # Process and build.
    expect_value("lifeguard_upstream_up", 1)
    build = exp.find("lifeguard_build_info")
    expect(len(build) == 1 and build[0].value == 1 and build[0].labels.get("version"),
           f"lifeguard_build_info{{version}} 1 missing: {build}")
    expect_value("lifeguard_config_last_reload_successful", 1)
    for name in PROCESS_METRICS:
        expect(exp.find(name), f"{name} missing")
    expect(exp.find("process_resident_memory_bytes") and exp.value("process_resident_memory_bytes") > 1e6,
           "process_resident_memory_bytes is not a plausible size")
    expect(exp.find("process_start_time_seconds")
           and abs(exp.value("process_start_time_seconds") - started) < 120,
           "process_start_time_seconds is not the start time in Unix seconds")
    assert not problems, "\n".join(problems) + f"\n--- /metrics\n{resp.body}"


def test_promtool_accepts_the_exposition(lifeguard, postgres, promtool_check):
    lg = start_against(lifeguard, postgres)
    body = lg.get("/metrics").body
    result = promtool_check(body)
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), (
        f"promtool check metrics (exit {result.returncode}):\n{result.stdout}{result.stderr}\n--- /metrics\n{body}"
    )


def test_healthz_and_http_errors(lifeguard, postgres):
    lg = start_against(lifeguard, postgres)
    assert lg.get("/healthz").status == 200
    assert lg.get("/readyz").status == 200
    assert lg.get("/no-such-path").status == 404
    assert lg.get("/metricsx").status == 404
    for path in ["/metrics", "/healthz", "/readyz"]:
        assert lg.request("POST", path, body=b"x=1").status == 405, f"POST {path}"
    assert lg.request("DELETE", "/metrics").status == 405
    # The server is still fine after the errors.
    assert lg.get("/metrics").status == 200


def test_readyz_follows_the_upstream(lifeguard, postgres):
    lg = start_against(lifeguard, postgres)
    lg.wait_status("/readyz", 200, timeout=10)
    assert lg.metrics().value("lifeguard_upstream_up") == 1
    with postgres.outage():
        down = lg.wait_status("/readyz", 503, timeout=10)
        assert down.body.strip(), "503 without a reason"
        assert lg.get("/healthz").status == 200, "the process is alive while the upstream is down"
        harness.wait_until(lambda: lg.metrics().value("lifeguard_upstream_up") == 0, 10,
                           what="lifeguard_upstream_up 0")
    lg.wait_status("/readyz", 200, timeout=10)
    harness.wait_until(lambda: lg.metrics().value("lifeguard_upstream_up") == 1, 10, what="lifeguard_upstream_up 1")


def test_starts_while_the_upstream_is_down(lifeguard, free_port):
    # A sidecar may start before its database: alive, not ready.
    lg = lifeguard("--min-size", "0", upstream=f"postgresql://app@127.0.0.1:{free_port()}/appdb")
    assert lg.get("/healthz").status == 200
    lg.wait_status("/readyz", 503, timeout=10)
    assert lg.metrics().value("lifeguard_upstream_up") == 0


def test_scrapes_answer_in_parallel(lifeguard, postgres):
    import concurrent.futures

    lg = start_against(lifeguard, postgres)
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(lambda _: lg.get("/metrics", timeout=10).status, range(64)))
    assert statuses == [200] * 64
