"""TLS on both sides, against a PostgreSQL that accepts nothing but TLS (`ssl = on`, `hostssl`-only pg_hba.conf),
with certificates the tests make (certs.py): Lifeguard's server connections use TLS with libpq's settings from the
upstream string, each certificate problem gives its own clear error, and clients reach Lifeguard over TLS."""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
from pathlib import Path

import psycopg
import pytest

import certs
import harness
import targets

pytestmark = pytest.mark.skipif(targets.TARGET != "lifeguard", reason="Lifeguard's TLS settings")

MODES = ["session", "transaction", "statement"]


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> certs.TestPKI:
    return certs.make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tls_postgres(pki):
    server = harness.PostgresServer(hba=[
        "hostssl all all 127.0.0.1/32 trust",
        "hostnossl all all 0.0.0.0/0 reject",
    ])
    files = certs.for_postgres(pki.server, server.dir / "tls")
    server.settings.update({"ssl": "on", "ssl_cert_file": str(files.cert), "ssl_key_file": str(files.key)})
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def tls_pooler(lifeguard_under_test, tls_postgres, tmp_path):
    factory = targets.PoolerFactory(lifeguard_under_test, tls_postgres, tmp_path)
    try:
        yield factory
    finally:
        factory.close()


@contextlib.contextmanager
def serving(postgres: harness.PostgresServer, pair: certs.Pair):
    """The server presents `pair` for the body of the with-block (a reload; new connections only)."""
    tls_dir = postgres.dir / "tls"
    good = certs.Pair(tls_dir / "server.crt", tls_dir / "server.key")
    saved = certs.Pair(tls_dir / "saved.crt", tls_dir / "saved.key")
    shutil.copyfile(good.cert, saved.cert)
    shutil.copyfile(good.key, saved.key)

    def install(source: certs.Pair):
        shutil.copyfile(source.cert, good.cert)
        shutil.copyfile(source.key, good.key)
        if harness.IS_ROOT:
            for path in (good.cert, good.key):
                shutil.chown(path, "postgres", "postgres")
        postgres.psql("select pg_reload_conf()", user=postgres.superuser, dbname="postgres")

    install(pair)
    try:
        yield
    finally:
        install(saved)


def upstream(postgres: harness.PostgresServer, **params: str) -> str:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return f"postgresql://{postgres.host}:{postgres.port}/?{query}"


def server_ssl(conn: psycopg.Connection) -> tuple:
    return conn.execute("select ssl, version from pg_stat_ssl where pid = pg_backend_pid()").fetchone()


# -- Lifeguard -> PostgreSQL


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("sslmode", ["verify-full", "verify-ca", "require", "prefer"])
def test_server_connections_use_tls(tls_pooler, tls_postgres, pki, mode, sslmode):
    target = tls_pooler(mode=mode, pool_size=2, upstream=upstream(tls_postgres, sslmode=sslmode,
                                                                  sslrootcert=pki.ca.path))
    with target.connect() as conn:
        for _ in range(3):
            ssl, version = server_ssl(conn)
            assert ssl is True
            assert version in ("TLSv1.2", "TLSv1.3")
    # Every server connection Lifeguard opened is encrypted.
    rows = tls_postgres.psql("select count(*) filter (where not s.ssl), count(*) from pg_stat_activity a "
                             "join pg_stat_ssl s using (pid) where a.usename = 'app' and a.backend_type = "
                             "'client backend'", user=tls_postgres.superuser, dbname="postgres")
    plain, total = map(int, rows.split("|"))
    assert total >= 1 and plain == 0, rows


def test_sslmode_disable_meets_a_hostssl_only_server(tls_pooler, tls_postgres):
    target = tls_pooler(mode="transaction", upstream=upstream(tls_postgres, sslmode="disable"))
    with pytest.raises(psycopg.OperationalError) as info:
        with target.connect() as conn:
            conn.execute("select 1")
    assert "no encryption" in str(info.value)


def connect_error(target: targets.Target) -> str:
    with pytest.raises(psycopg.OperationalError) as info:
        with target.connect(connect_timeout=10) as conn:
            conn.execute("select 1")
    return str(info.value)


@pytest.mark.parametrize("case,sslmode,root,words", [
    ("expired", "verify-ca", "ca", "server certificate has expired"),
    ("untrusted", "verify-ca", "ca", "not signed by a trusted certificate authority"),
    ("wrong_name", "verify-full", "ca", 'server certificate for "db.example.com" does not match host name'),
    ("server", "verify-ca", "other_ca", "not signed by a trusted certificate authority"),
])
def test_certificate_problems_are_named(tls_pooler, tls_postgres, pki, case, sslmode, root, words):
    roots = {"ca": pki.ca.path, "other_ca": pki.other_ca.path}[root]
    with serving(tls_postgres, getattr(pki, case)):
        target = tls_pooler(mode="transaction", upstream=upstream(tls_postgres, sslmode=sslmode, sslrootcert=roots))
        message = connect_error(target)
        assert words in message, message
        # The client hears it as a connection failure, the log says it, the metric counts it as tls.
        metrics = target.metrics()
        assert metrics.value("lifeguard_pool_connection_errors_total", database="appdb", user="app",
                             reason="tls") >= 1
        assert words in target.process.output


def test_verify_ca_accepts_a_certificate_for_another_name(tls_pooler, tls_postgres, pki):
    with serving(tls_postgres, pki.wrong_name):
        target = tls_pooler(mode="transaction", upstream=upstream(tls_postgres, sslmode="verify-ca",
                                                                  sslrootcert=pki.ca.path))
        with target.connect() as conn:
            assert server_ssl(conn)[0] is True


def test_verify_full_without_a_root_certificate_is_refused_with_advice(tls_pooler, tls_postgres):
    target = tls_pooler(mode="transaction", upstream=upstream(tls_postgres, sslmode="verify-full"))
    message = connect_error(target)
    assert "root certificate file" in message and "sslrootcert=system" in message, message


# -- clients -> Lifeguard


def client_tls_flags(pki: certs.TestPKI, sslmode: str = "require", ca: bool = False) -> list[str]:
    flags = ["--client-tls-sslmode", sslmode, "--client-tls-cert-file", str(pki.lifeguard.cert),
             "--client-tls-key-file", str(pki.lifeguard.key)]
    if ca:
        flags += ["--client-tls-ca-file", str(pki.ca.path)]
    return flags


def tls_both_sides(tls_pooler, tls_postgres, pki, mode: str = "transaction", sslmode: str = "require",
                   extra_flags: list[str] = (), **kwargs) -> targets.Target:
    return tls_pooler(mode=mode, pool_size=3,
                      upstream=upstream(tls_postgres, sslmode="verify-full", sslrootcert=pki.ca.path),
                      extra=client_tls_flags(pki, sslmode, ca=sslmode.startswith("verify")) + list(extra_flags),
                      **kwargs)


def psql(target: targets.Target, sql: str, **params: str) -> subprocess.CompletedProcess:
    dsn = target.dsn(**params)
    return subprocess.run([str(harness.PG_BIN / "psql"), "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", dsn, "-c", sql],
                          env=harness.clean_env(), capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("mode", MODES)
def test_clients_connect_over_tls_with_require_and_verify_full(tls_pooler, tls_postgres, pki, mode):
    target = tls_both_sides(tls_pooler, tls_postgres, pki, mode)
    for params in ({"sslmode": "require"},
                   {"sslmode": "verify-full", "sslrootcert": str(pki.ca.path)},
                   {"sslmode": "verify-ca", "sslrootcert": str(pki.ca.path)}):
        with target.connect(**params) as conn:
            assert conn.pgconn.ssl_in_use
            assert server_ssl(conn)[0] is True
        r = psql(target, "select ssl from pg_stat_ssl where pid = pg_backend_pid()", **params)
        assert r.returncode == 0 and r.stdout.strip() == "t", r.stderr
    # verify-full by host name too (the certificate names localhost).
    dsn = target.dsn(sslmode="verify-full", sslrootcert=str(pki.ca.path)).replace(f"host={target.host}",
                                                                                  "host=localhost")
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert conn.pgconn.ssl_in_use


@pytest.mark.parametrize("mode", MODES)
def test_asyncpg_over_tls(tls_pooler, tls_postgres, pki, mode):
    import asyncio
    import ssl

    import asyncpg

    target = tls_both_sides(tls_pooler, tls_postgres, pki, mode)
    context = ssl.create_default_context(cafile=str(pki.ca.path))

    async def run():
        conn = await asyncpg.connect(host=target.host, port=target.port, user="app", database="appdb", ssl=context,
                                     statement_cache_size=0)
        try:
            assert await conn.fetchval("select ssl from pg_stat_ssl where pid = pg_backend_pid()") is True
            assert await conn.fetchval("select $1::int + 1", 41) == 42
        finally:
            await conn.close()

    asyncio.run(run())


@pytest.mark.parametrize("mode", MODES)
def test_pgbench_over_tls(tls_pooler, tls_postgres, pki, mode):
    target = tls_both_sides(tls_pooler, tls_postgres, pki, mode)
    env = harness.clean_env({"PGSSLMODE": "verify-full", "PGSSLROOTCERT": str(pki.ca.path)})
    init = subprocess.run([str(harness.PG_BIN / "pgbench"), "-i", "-q", "-s", "1", "-h", tls_postgres.host, "-p",
                           str(tls_postgres.port), "-U", "app", "appdb"], env=env, capture_output=True, text=True,
                          timeout=120)
    assert init.returncode == 0, init.stderr
    clients = 3 if mode == "session" else 8  # session mode holds a server connection per client (pool_size 3)
    r = subprocess.run([str(harness.PG_BIN / "pgbench"), "-n", "-S", "-c", str(clients), "-j", "2", "-t", "50", "-h",
                        target.host, "-p", str(target.port), "-U", "app", "appdb"],
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"number of transactions actually processed: {clients * 50}/{clients * 50}" in r.stdout, r.stdout


JDBC_JAR = Path("/usr/share/java/postgresql.jar")
JDBC_TLS_PROBE = r"""
import java.sql.*;

public class JdbcTlsProbe {
    public static void main(String[] args) throws Exception {
        try (Connection c = DriverManager.getConnection(args[0])) {
            ResultSet rs = c.createStatement().executeQuery("select ssl from pg_stat_ssl where pid = pg_backend_pid()");
            rs.next();
            System.out.println(rs.getBoolean(1));
            PreparedStatement p = c.prepareStatement("select ?::int + 1");
            p.setInt(1, 41);
            rs = p.executeQuery();
            rs.next();
            System.out.println(rs.getInt(1));
        }
    }
}
"""


@pytest.mark.parametrize("mode", MODES)
def test_jdbc_over_tls_with_verify_full(tls_pooler, tls_postgres, pki, tmp_path, mode):
    javac = shutil.which("javac")
    if javac is None or not JDBC_JAR.exists():
        pytest.fail("javac or /usr/share/java/postgresql.jar missing: scripts/test installs them", pytrace=False)
    (tmp_path / "JdbcTlsProbe.java").write_text(JDBC_TLS_PROBE)
    subprocess.run([javac, "-cp", str(JDBC_JAR), "-d", str(tmp_path), str(tmp_path / "JdbcTlsProbe.java")],
                   check=True, capture_output=True, timeout=120)
    target = tls_both_sides(tls_pooler, tls_postgres, pki, mode)
    url = (f"jdbc:postgresql://localhost:{target.port}/appdb?user=app&sslmode=verify-full"
           f"&sslrootcert={pki.ca.path}&prepareThreshold=0")
    r = subprocess.run(["java", "-cp", f"{tmp_path}:{JDBC_JAR}", "JdbcTlsProbe", url], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.split() == ["true", "42"], r.stdout + r.stderr


def test_require_refuses_a_plaintext_client_naming_the_setting(tls_pooler, tls_postgres, pki):
    target = tls_both_sides(tls_pooler, tls_postgres, pki)
    with pytest.raises(psycopg.OperationalError) as info:
        target.connect(sslmode="disable")
    assert "client_tls_sslmode" in str(info.value)
    assert info.value.sqlstate == "28000" or "28000" in str(info.value) or "SSL required" in str(info.value)
    assert target.metrics().value("lifeguard_client_rejected_total", reason="auth") >= 1


def test_prefer_serves_plaintext_and_tls_clients(tls_pooler, tls_postgres, pki):
    target = tls_both_sides(tls_pooler, tls_postgres, pki, sslmode="prefer")
    with target.connect(sslmode="disable") as conn:
        assert not conn.pgconn.ssl_in_use
        assert conn.execute("select 1").fetchone() == (1,)
    with target.connect(sslmode="require") as conn:
        assert conn.pgconn.ssl_in_use


def test_bytes_pipelined_behind_the_ssl_request_are_refused(tls_pooler, tls_postgres, pki):
    import socket
    import struct

    import wire

    target = tls_both_sides(tls_pooler, tls_postgres, pki)
    with socket.create_connection((target.host, target.port), timeout=5) as sock:
        sock.sendall(struct.pack("!ii", 8, 80877103) + wire.startup_packet("app", "appdb"))
        data = b""
        with contextlib.suppress(OSError):
            while chunk := sock.recv(4096):
                data += chunk
    assert data[:1] == b"E", data
    assert b"08P01" in data and b"unencrypted data after SSL request" in data, data


def test_direct_tls_needs_the_postgresql_alpn_protocol(tls_pooler, tls_postgres, pki):
    import socket
    import ssl

    import wire

    target = tls_both_sides(tls_pooler, tls_postgres, pki)

    def direct(alpn: list[str] | None) -> bytes:
        context = ssl.create_default_context(cafile=str(pki.ca.path))
        if alpn:
            context.set_alpn_protocols(alpn)
        with socket.create_connection((target.host, target.port), timeout=5) as raw:
            with context.wrap_socket(raw, server_hostname="localhost") as sock:
                sock.sendall(wire.startup_packet("app", "appdb"))
                data = b""
                with contextlib.suppress(OSError):
                    while b"Z\x00\x00\x00\x05" not in data and (chunk := sock.recv(4096)):
                        data += chunk
                return data

    good = direct(["postgresql"])
    assert good[:1] == b"R" and b"Z\x00\x00\x00\x05I" in good, good
    bad = direct(None)
    assert bad[:1] == b"E" and b"ALPN" in bad, bad


def test_auth_type_cert_logs_in_by_the_certificate_common_name(tls_pooler, tls_postgres, pki):
    app = pki.ca.issue("client-app", "app", server=False)
    other = pki.ca.issue("client-other", "someone_else", server=False)
    stranger = pki.other_ca.issue("client-stranger", "app", server=False)
    target = tls_both_sides(tls_pooler, tls_postgres, pki, sslmode="verify-full", auth_type="cert")
    params = {"sslmode": "verify-full", "sslrootcert": str(pki.ca.path)}
    with target.connect(sslcert=str(app.cert), sslkey=str(app.key), **params) as conn:
        assert conn.execute("select current_user").fetchone() == ("app",)
    with pytest.raises(psycopg.OperationalError) as info:
        target.connect(sslcert=str(other.cert), sslkey=str(other.key), **params)
    assert 'certificate authentication failed for user "app"' in str(info.value)
    # A certificate from a CA Lifeguard does not trust fails the handshake; none at all too.
    for extra in ({"sslcert": str(stranger.cert), "sslkey": str(stranger.key)}, {}):
        with pytest.raises(psycopg.OperationalError):
            target.connect(**extra, **params)


# -- files: check-config and reloads


def served_certificate_serial(target: targets.Target, pki: certs.TestPKI) -> int:
    """The serial number of the certificate Lifeguard presents to a new client."""
    import socket
    import ssl
    import struct

    from cryptography import x509

    context = ssl.create_default_context(cafile=str(pki.ca.path))
    with socket.create_connection((target.host, target.port), timeout=5) as raw:
        raw.sendall(struct.pack("!ii", 8, 80877103))
        assert raw.recv(1) == b"S"
        with context.wrap_socket(raw, server_hostname="localhost") as sock:
            return x509.load_der_x509_certificate(sock.getpeercert(binary_form=True)).serial_number


def test_check_config_names_the_broken_tls_file(lifeguard_under_test, pki, tmp_path):
    mismatched = pki.ca.issue("mismatched", "localhost", dns=["localhost"])
    cases = {
        "client_tls_key_file": (pki.lifeguard.cert, mismatched.key, "key must belong to client_tls_cert_file"),
        "client_tls_cert_file": (pki.expired.cert, pki.expired.key, "expired"),
    }
    for setting, (cert, key, words) in cases.items():
        path = tmp_path / f"{setting}.toml"
        path.write_text(harness.toml_config(upstream="postgresql://127.0.0.1:5432", client_tls_sslmode="require",
                                            client_tls_cert_file=str(cert), client_tls_key_file=str(key)))
        result = lifeguard_under_test.run("check-config", str(path))
        assert result.returncode == 2, result.stdout + result.stderr
        assert setting in result.stderr and words in result.stderr, result.stderr
    # A missing root certificate for verify-full is named with its upstream.
    path = tmp_path / "upstream.toml"
    path.write_text(harness.toml_config(upstream="postgresql://127.0.0.1:5432/?sslmode=verify-full&sslrootcert=/nope"))
    result = lifeguard_under_test.run("check-config", str(path))
    assert result.returncode == 2 and "upstream:" in result.stderr and "/nope" in result.stderr, result.stderr


def test_sighup_rereads_certificates_and_keeps_the_old_ones_when_broken(lifeguard_under_test, tls_postgres, pki,
                                                                        tmp_path):
    live = certs.Pair(tmp_path / "live.crt", tmp_path / "live.key")
    shutil.copyfile(pki.lifeguard.cert, live.cert)
    shutil.copyfile(pki.lifeguard.key, live.key)
    config = tmp_path / "lifeguard.toml"
    config.write_text(harness.toml_config(
        upstream=upstream(tls_postgres, sslmode="verify-full", sslrootcert=pki.ca.path), pool_mode="transaction",
        client_tls_sslmode="require", client_tls_cert_file=str(live.cert), client_tls_key_file=str(live.key)))
    process = lifeguard_under_test(config=config)
    target = targets.Target("lifeguard", process.listen_port, process=process, metrics_port=process.metrics_port,
                            config_path=config)
    harness.wait_until(lambda: harness.port_accepts(target.port), 10, what="lifeguard accepting clients")
    first = served_certificate_serial(target, pki)
    held = target.connect(sslmode="require")
    assert held.pgconn.ssl_in_use

    # A broken key: the reload fails, the old certificate stays in use, the connection open stays open.
    live.key.write_text("not a key\n")
    target.signal(signal.SIGHUP)
    harness.wait_until(lambda: target.metrics().value("lifeguard_config_last_reload_successful") == 0, 10,
                       what="a failed reload")
    assert served_certificate_serial(target, pki) == first
    assert held.execute("select 1").fetchone() == (1,)
    assert "client_tls_key_file" in process.output

    # A renewed certificate: new connections get it.
    renewed = pki.ca.issue("renewed", "localhost", dns=["localhost"], ips=[harness.LOOPBACK])
    shutil.copyfile(renewed.cert, live.cert)
    shutil.copyfile(renewed.key, live.key)
    target.signal(signal.SIGHUP)
    harness.wait_until(lambda: target.metrics().value("lifeguard_config_last_reload_successful") == 1, 10,
                       what="a good reload")
    assert served_certificate_serial(target, pki) != first
    assert held.execute("select 2").fetchone() == (2,)
    held.close()


def test_direct_tls_to_the_server(tls_pooler, tls_postgres, pki):
    """sslnegotiation=direct (PostgreSQL 17's TLS without SSLRequest, ALPN postgresql). PostgreSQL 15 cannot take it,
    Lifeguard can: a second Lifeguard in front of the TLS-only server is the direct-TLS server here."""
    inner = tls_both_sides(tls_pooler, tls_postgres, pki, "transaction")
    outer = tls_pooler(mode="transaction", upstream=f"postgresql://localhost:{inner.port}/?sslmode=verify-full"
                                                     f"&sslrootcert={pki.ca.path}&sslnegotiation=direct")
    with outer.connect() as conn:
        assert conn.execute("select ssl from pg_stat_ssl where pid = pg_backend_pid()").fetchone() == (True,)
    # A weak sslmode with direct negotiation is refused up front, as by libpq.
    result = tls_pooler.lifeguard.run("check-config", "--upstream",
                                      f"postgresql://localhost:{inner.port}/?sslmode=prefer&sslnegotiation=direct")
    assert result.returncode == 2 and "sslnegotiation=direct" in result.stderr, result.stderr


def test_every_certificate_file_has_its_expiry_exported(tls_pooler, tls_postgres, pki, promtool_check):
    from cryptography import x509

    target = tls_both_sides(tls_pooler, tls_postgres, pki, sslmode="verify-full")
    metrics = target.metrics()

    def not_after(path: Path) -> int:
        return int(x509.load_pem_x509_certificate(path.read_bytes()).not_valid_after_utc.timestamp())

    for path in (pki.lifeguard.cert, pki.ca.path):  # client_tls_cert_file; client_tls_ca_file and sslrootcert
        assert metrics.value("lifeguard_tls_certificate_expiry_timestamp_seconds", file=str(path)) == not_after(path)
    promtool_check(target.process.get("/metrics").body)


def test_client_tls_protocols_limits_the_versions_offered(tls_pooler, tls_postgres, pki):
    import socket
    import ssl
    import struct

    target = tls_both_sides(tls_pooler, tls_postgres, pki, extra_flags=["--client-tls-protocols", "tlsv1.3"])

    def handshake(maximum: ssl.TLSVersion) -> str:
        context = ssl.create_default_context(cafile=str(pki.ca.path))
        context.maximum_version = maximum
        with socket.create_connection((target.host, target.port), timeout=5) as raw:
            raw.sendall(struct.pack("!ii", 8, 80877103))
            assert raw.recv(1) == b"S"
            with context.wrap_socket(raw, server_hostname="localhost") as sock:
                return sock.version()

    assert handshake(ssl.TLSVersion.TLSv1_3) == "TLSv1.3"
    with pytest.raises(ssl.SSLError):
        handshake(ssl.TLSVersion.TLSv1_2)
