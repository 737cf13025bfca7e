"""Authentication without a password file: SCRAM and md5 pass-through, auth_user/auth_query, and the SECURITY DEFINER
function of docs/configuration.md, against PostgreSQL servers that require passwords.

Lifeguard holds no plain-text password of the clients here: the auth_file has only secrets copied from pg_authid (or
none for the user at all), and the upstream DSN has no password. What logs in to PostgreSQL is what the clients'
logins proved. Nothing secret may appear in Lifeguard's output."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import re
import subprocess
import time
from pathlib import Path

import asyncpg
import psycopg
import pytest

import harness
import targets

pytestmark = pytest.mark.skipif(targets.TARGET != "lifeguard", reason="checks Lifeguard's own authentication")

DOCS = harness.ROOT / "docs" / "configuration.md"


@pytest.fixture(scope="module")
def scram_pg():
    """password_encryption's default (scram-sha-256), and scram-sha-256 required for everyone but the superuser."""
    server = harness.PostgresServer(hba=[f"host all all {harness.LOOPBACK}/32 scram-sha-256"])
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


@pytest.fixture(scope="module")
def md5_pg():
    server = harness.PostgresServer(settings={"password_encryption": "md5"},
                                    hba=[f"host all all {harness.LOOPBACK}/32 md5"])
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


# ---------------------------------------------------------------------------------------------------------------
# Helpers


def create_role(server: harness.PostgresServer, name: str, password: str, options: str = "LOGIN") -> str:
    server.psql(f"DROP ROLE IF EXISTS {name}; CREATE ROLE {name} {options} PASSWORD '{password}'",
                user=server.superuser, dbname="postgres")
    return name


def stored_secret(server: harness.PostgresServer, role: str) -> str:
    return server.psql(f"SELECT rolpassword FROM pg_authid WHERE rolname = '{role}'", user=server.superuser)


def scram_pieces(secret: str, password: str) -> list[str]:
    """Everything secret about a SCRAM secret and its password: the secret, StoredKey, ServerKey, and the ClientKey
    (hex, base64, and as Swift prints a byte array)."""
    match = re.fullmatch(r"SCRAM-SHA-256\$(\d+):([^$]+)\$([^:]+):(.+)", secret)
    assert match, secret
    iterations, salt, stored, server_key = match.groups()
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(salt), int(iterations))
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    assert base64.b64encode(hashlib.sha256(client_key).digest()).decode() == stored
    return [password, secret, stored, server_key, client_key.hex(), base64.b64encode(client_key).decode(),
            str(list(client_key))[1:-1]]


def start(lifeguard, tmp_path: Path, server: harness.PostgresServer, users: dict[str, str], **settings):
    userlist = tmp_path / "userlist.txt"
    userlist.write_text("".join(f'"{u}" "{p}"\n' for u, p in users.items()))
    config = {
        "upstream": f"postgresql://{server.host}:{server.port}",
        "auth_file": str(userlist),
        "log_level": "trace",
        "pool_timeout": "5s",
        **settings,
    }
    text = harness.toml_config(**{k: v for k, v in config.items() if k != "databases"})
    for name, dsn in settings.get("databases", {}).items():
        text += f"\n[databases.{name}]\ndsn = {harness.toml_value(dsn)}\n"
    path = lifeguard.write_config(text)
    process = lifeguard(config=path)
    harness.wait_until(lambda: harness.port_accepts(process.listen_port), 10, interval=0.05,
                       what="lifeguard accepting PostgreSQL clients")
    return process, path


def via_psql(server: harness.PostgresServer, port: int, user: str, password: str, sql: str) -> str:
    r = subprocess.run(
        [str(server.bin / "psql"), "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-h", harness.LOOPBACK, "-p",
         str(port), "-U", user, "-d", "appdb", "-c", sql],
        env=harness.clean_env({"PGPASSWORD": password, "PGCONNECT_TIMEOUT": "10"}),
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
    )
    assert r.returncode == 0, f"psql as {user}: {r.stderr.strip()}"
    return r.stdout.strip()


def via_psycopg(port: int, user: str, password: str) -> str:
    with psycopg.connect(host=harness.LOOPBACK, port=port, user=user, password=password, dbname="appdb",
                         connect_timeout=10, prepare_threshold=None) as conn:
        with conn.transaction():
            conn.execute("select 1")
            who = conn.execute("select current_user").fetchone()[0]
        assert conn.execute("select %s::int + 1", (41,)).fetchone() == (42,)
        return who


async def _asyncpg(port: int, user: str, password: str) -> str:
    conn = await asyncpg.connect(host=harness.LOOPBACK, port=port, user=user, password=password, database="appdb",
                                 statement_cache_size=0, timeout=10)
    try:
        async with conn.transaction():
            who = await conn.fetchval("select current_user")
        assert await conn.fetchval("select $1::int * 2", 21) == 42
        return who
    finally:
        await conn.close()


def via_asyncpg(port: int, user: str, password: str) -> str:
    return asyncio.run(_asyncpg(port, user, password))


def login_error(port: int, user: str, password: str) -> asyncpg.PostgresError:
    try:
        via_asyncpg(port, user, password)
    except asyncpg.PostgresError as e:
        return e
    raise AssertionError(f"{user} logged in with password {password!r}")


def every_client_logs_in(server, port: int, user: str, password: str) -> None:
    assert via_psql(server, port, user, password, "select current_user") == user
    assert via_psycopg(port, user, password) == user
    assert via_asyncpg(port, user, password) == user


def assert_refused(port: int, user: str, password: str) -> None:
    error = login_error(port, user, password)
    assert error.sqlstate == "28P01", (user, error)
    assert str(error) == f'password authentication failed for user "{user}"'


def assert_hidden(lifeguard, process, config: Path, secrets: list[str]) -> None:
    """Stops lifeguard and checks that no secret is in its output, its metrics or check-config's output."""
    metrics = process.get("/metrics").body
    assert process.stop() == 0
    check = lifeguard.run("check-config", str(config))
    assert check.returncode == 0, check
    for text in (process.stdout, process.stderr, metrics, check.stdout, check.stderr):
        for secret in secrets:
            assert secret not in text, f"a secret ({secret[:6]}...) appears in:\n{text[-3000:]}"


# ---------------------------------------------------------------------------------------------------------------
# SCRAM pass-through from auth_file secrets


@pytest.mark.parametrize("mode", ["session", "transaction"])
def test_scram_secrets_in_auth_file_and_no_password_anywhere(lifeguard, tmp_path, scram_pg, mode):
    password = f"Al1ce-{mode}-pw"
    user = create_role(scram_pg, f"alice_{mode}", password)
    secret = stored_secret(scram_pg, user)
    assert secret.startswith("SCRAM-SHA-256$")
    process, config = start(lifeguard, tmp_path, scram_pg, {user: secret}, auth_type="scram-sha-256",
                            pool_mode=mode)
    assert password not in (tmp_path / "userlist.txt").read_text()

    every_client_logs_in(scram_pg, process.listen_port, user, password)
    assert "server logins use what a client proved" in process.stdout + process.stderr
    with psycopg.connect(scram_pg.kv_dsn(user=scram_pg.superuser), autocommit=True) as monitor:
        backends = monitor.execute("SELECT count(*) FROM pg_stat_activity WHERE usename = %s", (user,)).fetchone()[0]
    assert backends >= 1, "the server connections log in as the client's own role"
    assert_refused(process.listen_port, user, "Wr0ng-password")
    # A fresh pool opens its connections with the key: after the server dropped them all, the next client still works.
    with psycopg.connect(scram_pg.kv_dsn(user=scram_pg.superuser), autocommit=True) as monitor:
        monitor.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (user,))
    def fresh_login():
        try:
            return via_asyncpg(process.listen_port, user, password) == user
        except asyncpg.ConnectionFailureError:  # a terminated connection the pool had not noticed yet
            return False

    harness.wait_until(fresh_login, 10, what="a new server connection from the recovered key")
    assert_hidden(lifeguard, process, config, scram_pieces(secret, password))


# ---------------------------------------------------------------------------------------------------------------
# auth_query


def test_auth_query_finds_caches_and_refuses(lifeguard, tmp_path, scram_pg):
    lookup_password = "L00kup-pw"
    lookup = create_role(scram_pg, "lookup_su", lookup_password, "LOGIN SUPERUSER")
    bob_password = "B0b-pw-one"
    bob = create_role(scram_pg, "bob_aq", bob_password)
    expired = create_role(scram_pg, "eve_expired", "Eve-pw", "LOGIN VALID UNTIL '2000-01-01'")
    nologin = create_role(scram_pg, "nina_nologin", "Nina-pw", "NOLOGIN")
    # Only auth_user is in the file (its password, as PgBouncer takes it); bob is found by auth_query.
    process, config = start(lifeguard, tmp_path, scram_pg, {lookup: lookup_password}, auth_type="scram-sha-256",
                            auth_user=lookup, pool_mode="transaction")
    port = process.listen_port

    every_client_logs_in(scram_pg, port, bob, bob_password)
    assert_refused(port, bob, "Wr0ng-password")
    assert_refused(port, "nobody_at_all", "whatever")
    assert_refused(port, expired, "Eve-pw")
    assert_refused(port, nologin, "Nina-pw")

    # Answers are kept for 5 seconds: a new password is seen once the answer expires.
    time.sleep(5.5)
    assert via_asyncpg(port, bob, bob_password) == bob  # a fresh lookup, kept from now on
    scram_pg.psql(f"ALTER ROLE {bob} PASSWORD 'B0b-pw-two'", user=scram_pg.superuser)
    assert via_asyncpg(port, bob, bob_password) == bob, "the answer is kept for a few seconds"
    time.sleep(5.5)
    assert_refused(port, bob, bob_password)
    every_client_logs_in(scram_pg, port, bob, "B0b-pw-two")

    secrets = [lookup_password, bob_password, "B0b-pw-two", stored_secret(scram_pg, bob)]
    secrets += scram_pieces(stored_secret(scram_pg, bob), "B0b-pw-two")
    log = process.stdout + process.stderr
    assert "auth_query answered" in log
    assert_hidden(lifeguard, process, config, secrets)


def test_auth_query_runs_with_a_fixed_search_path(lifeguard, tmp_path, scram_pg):
    lookup = create_role(scram_pg, "lookup_path", "L00kup-path-pw", "LOGIN SUPERUSER")
    # Whatever auth_user's own sessions would use, the query sees only pg_catalog, pg_temp.
    scram_pg.psql(f"CREATE SCHEMA IF NOT EXISTS evil; ALTER ROLE {lookup} SET search_path = evil, public",
                  user=scram_pg.superuser)
    grace = create_role(scram_pg, "grace_path", "Gr4ce-pw")
    query = ("SELECT rolname, CASE WHEN current_setting('search_path') = 'pg_catalog, pg_temp' THEN rolpassword END "
             "FROM pg_authid WHERE rolname = $1")
    process, _ = start(lifeguard, tmp_path, scram_pg, {lookup: "L00kup-path-pw"}, auth_type="scram-sha-256",
                       auth_user=lookup, auth_query=query, pool_mode="transaction")
    assert via_asyncpg(process.listen_port, grace, "Gr4ce-pw") == grace
    # The setting was for the query's transaction only: auth_user's server connection keeps its own.
    assert via_psql(scram_pg, process.listen_port, lookup, "L00kup-path-pw", "show search_path") == "evil, public"


def documented_function() -> str:
    """The SECURITY DEFINER example of docs/configuration.md, as written there."""
    blocks = re.findall(r"```sql\n(.*?)```", DOCS.read_text(), re.S)
    found = [b for b in blocks if "SECURITY DEFINER" in b]
    assert len(found) == 1, "docs/configuration.md should have one SECURITY DEFINER example"
    return found[0]


def test_the_documented_security_definer_function_serves_a_non_superuser(lifeguard, tmp_path, scram_pg):
    auth_password = "Auth-fn-pw"
    create_role(scram_pg, "lifeguard_auth", auth_password)
    scram_pg.psql(documented_function(), user=scram_pg.superuser)
    # The role itself cannot read the secrets.
    with psycopg.connect(scram_pg.kv_dsn(user="lifeguard_auth", password=auth_password)) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT rolpassword FROM pg_authid")
    carol_password = "Car0l-pw"
    carol = create_role(scram_pg, "carol_fn", carol_password)
    expired = create_role(scram_pg, "carl_expired", "Carl-pw", "LOGIN VALID UNTIL '2000-01-01'")
    process, config = start(lifeguard, tmp_path, scram_pg, {"lifeguard_auth": auth_password},
                            auth_type="scram-sha-256", auth_user="lifeguard_auth",
                            auth_query="SELECT uname, phash FROM lifeguard.user_lookup($1)", pool_mode="session")
    every_client_logs_in(scram_pg, process.listen_port, carol, carol_password)
    assert_refused(process.listen_port, carol, "Wr0ng-password")
    assert_refused(process.listen_port, expired, "Carl-pw")
    assert_refused(process.listen_port, "nobody_at_all", "whatever")
    assert_hidden(lifeguard, process, config,
                  [auth_password, *scram_pieces(stored_secret(scram_pg, carol), carol_password)])


def test_an_unreachable_auth_database_is_08006_and_listed_users_still_log_in(lifeguard, tmp_path, scram_pg):
    closed = harness.free_port()
    alice_password = "Al1ce-down-pw"
    alice = create_role(scram_pg, "alice_down", alice_password)
    create_role(scram_pg, "dora_down", "Dora-pw")
    process, _ = start(
        lifeguard, tmp_path, scram_pg, {alice: stored_secret(scram_pg, alice)}, auth_type="scram-sha-256",
        auth_user="lookup_down", auth_dbname="down", pool_timeout="2s",
        databases={"down": f"postgresql://{harness.LOOPBACK}:{closed}/appdb",
                   "appdb": f"postgresql://{scram_pg.host}:{scram_pg.port}/appdb"},
    )
    error = login_error(process.listen_port, "dora_down", "Dora-pw")
    assert error.sqlstate == "08006", error
    assert 'could not look up the password of user "dora_down"' in str(error), error
    assert 'auth_user "lookup_down" could not connect to database "down"' in str(error), error
    assert via_asyncpg(process.listen_port, alice, alice_password) == alice


# ---------------------------------------------------------------------------------------------------------------
# md5 pass-through


def test_md5_secrets_log_in_to_an_md5_server(lifeguard, tmp_path, md5_pg):
    lookup_password = "L00kup-md5-pw"
    lookup = create_role(md5_pg, "lookup_md5", lookup_password, "LOGIN SUPERUSER")
    frank_password = "Fr4nk-md5-pw"
    frank = create_role(md5_pg, "frank_md5", frank_password)
    dave_password = "D4ve-md5-pw"
    dave = create_role(md5_pg, "dave_md5", dave_password)
    secrets = {role: stored_secret(md5_pg, role) for role in (lookup, frank, dave)}
    assert all(s.startswith("md5") and len(s) == 35 for s in secrets.values()), secrets
    # Only md5 secrets: auth_user's own (it logs in with it, before any client), frank's; dave is found by auth_query.
    process, config = start(lifeguard, tmp_path, md5_pg, {lookup: secrets[lookup], frank: secrets[frank]},
                            auth_type="md5", auth_user=lookup, pool_mode="transaction")
    every_client_logs_in(md5_pg, process.listen_port, frank, frank_password)
    every_client_logs_in(md5_pg, process.listen_port, dave, dave_password)
    assert_refused(process.listen_port, dave, "Wr0ng-password")
    assert_refused(process.listen_port, frank, "Wr0ng-password")
    hidden = [lookup_password, frank_password, dave_password, *secrets.values()]
    hidden += [s[3:] for s in secrets.values()]
    assert_hidden(lifeguard, process, config, hidden)
