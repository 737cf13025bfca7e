"""TLS on both sides, against a PostgreSQL that accepts nothing but TLS (`ssl = on`, `hostssl`-only pg_hba.conf),
with certificates the tests make (certs.py): Lifeguard's server connections use TLS with libpq's settings from the
upstream string, each certificate problem gives its own clear error, and clients reach Lifeguard over TLS."""

from __future__ import annotations

import contextlib
import shutil
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
        "local all all trust",
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
