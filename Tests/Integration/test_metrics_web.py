"""The metrics endpoint behind `metrics_web_config` (exporter-toolkit's web configuration): HTTPS, client
certificates and basic auth, proven with real clients (Python's ssl, openssl s_client, a real Prometheus), certificates
made by openssl in a temporary directory and bcrypt hashes made by the system's libxcrypt.

The upstream is a closed port: nothing here needs PostgreSQL, only the exporter."""

from __future__ import annotations

import base64
import ctypes
import http.client
import os
import signal
import ssl
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

import harness
import prometheus

PASSWORD = "scrape-Secret-4711"
USER = "prometheus"
UPSTREAM = "postgresql://app@127.0.0.1:1/appdb"


def bcrypt(password: str) -> str:
    """A bcrypt hash of `password` at cost 4 (fast), from libxcrypt: no hand-written bcrypt here either."""
    lib = ctypes.CDLL("libcrypt.so.1")
    lib.crypt_gensalt.restype = ctypes.c_char_p
    lib.crypt_gensalt.argtypes = [ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p, ctypes.c_int]
    lib.crypt.restype = ctypes.c_char_p
    lib.crypt.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    setting = lib.crypt_gensalt(b"$2b$", 4, None, 0)
    return lib.crypt(password.encode(), setting).decode()


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@dataclass
class PKI:
    """A CA, a server certificate for 127.0.0.1 signed by it, a client certificate signed by it, and a client
    certificate signed by nobody we trust."""
    dir: Path

    @property
    def ca(self) -> Path:
        return self.dir / "ca.crt"

    def path(self, name: str) -> Path:
        return self.dir / name

    def not_after(self, name: str) -> int:
        out = subprocess.run(["openssl", "x509", "-noout", "-enddate", "-in", str(self.dir / name)],
                             check=True, capture_output=True, text=True).stdout
        return int(ssl.cert_time_to_seconds(out.strip().split("=", 1)[1]))


def make_pki(directory: Path, server_days: int = 30) -> PKI:
    directory.mkdir(parents=True, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "60", "-subj", "/CN=Lifeguard test CA",
            cwd=directory)
    (directory / "server.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1", cwd=directory)
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "server.crt", "-days", str(server_days), "-extfile", "server.ext", cwd=directory)
    openssl("req", *ec, "-keyout", "client.key", "-out", "client.csr", "-subj", "/CN=prometheus", cwd=directory)
    openssl("x509", "-req", "-in", "client.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "client.crt", "-days", "30", cwd=directory)
    openssl("req", "-x509", *ec, "-keyout", "rogue.key", "-out", "rogue.crt", "-days", "30", "-subj", "/CN=rogue",
            cwd=directory)
    return PKI(directory)


@pytest.fixture
def pki(tmp_path) -> PKI:
    return make_pki(tmp_path / "pki")


def web_config(pki: PKI, client_auth: str | None = None, users: dict[str, str] | None = None,
               extra_tls: str = "") -> str:
    lines = ["tls_server_config:", f"  cert_file: {pki.path('server.crt')}", f"  key_file: {pki.path('server.key')}"]
    if client_auth:
        lines += [f"  client_ca_file: {pki.ca}", f"  client_auth_type: {client_auth}"]
    lines += [f"  {line}" for line in extra_tls.splitlines() if line]
    if users:
        lines.append("basic_auth_users:")
        lines += [f"  {user}: {hash_}" for user, hash_ in users.items()]
    return "\n".join(lines) + "\n"


def https(port: int, path: str, pki: PKI, auth: tuple[str, str] | None = (USER, PASSWORD),
          client_cert: str | None = None, timeout: float = 5.0) -> harness.Response:
    context = ssl.create_default_context(cafile=str(pki.ca))
    if client_cert:
        context.load_cert_chain(pki.path(f"{client_cert}.crt"), pki.path(f"{client_cert}.key"))
    conn = http.client.HTTPSConnection(harness.LOOPBACK, port, context=context, timeout=timeout)
    try:
        headers = {}
        if auth:
            headers["Authorization"] = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        conn.request("GET", path, headers=headers)
        resp = conn.getresponse()
        return harness.Response(resp.status, {k.lower(): v for k, v in resp.getheaders()},
                                resp.read().decode("utf-8", "replace"))
    finally:
        conn.close()


def start(lifeguard, web: Path, **kwargs):
    """lifeguard run with the web configuration; waits until /healthz answers 200 over HTTPS."""
    process = lifeguard("--metrics-web-config", str(web), upstream=UPSTREAM, wait=False)
    pki = kwargs["pki"]

    def healthy():
        if process.returncode is not None:
            raise AssertionError(f"lifeguard exited\n{process.describe()}")
        try:
            return https(process.metrics_port, "/healthz", pki, **{k: v for k, v in kwargs.items() if k != "pki"},
                         timeout=2).status == 200
        except (OSError, ssl.SSLError):
            return False

    harness.wait_until(healthy, 30, what="GET /healthz over HTTPS -> 200")
    return process


def metrics(process, pki: PKI, **kwargs) -> harness.Exposition:
    resp = https(process.metrics_port, "/metrics", pki, **kwargs)
    assert resp.status == 200, f"{resp.status} {resp.body[:300]}"
    return harness.Exposition(resp.body)


def rejected(exposition: harness.Exposition, reason: str) -> float:
    return exposition.value("lifeguard_metrics_requests_rejected_total", reason=reason)


def test_https_with_basic_auth(lifeguard, pki, tmp_path):
    hash_ = bcrypt(PASSWORD)
    web = tmp_path / "web.yml"
    web.write_text(web_config(pki, users={USER: hash_}))
    process = start(lifeguard, web, pki=pki)
    port = process.metrics_port

    before = metrics(process, pki)
    assert before.value("lifeguard_build_info", version=before.find("lifeguard_build_info")[0].labels["version"]) == 1
    assert rejected(before, "unauthorized") == 0
    assert rejected(before, "no_credentials") == 0
    # Both certificate files of the web configuration, with their notAfter.
    assert before.value("lifeguard_tls_certificate_expiry_timestamp_seconds",
                        file=str(pki.path("server.crt"))) == pki.not_after("server.crt")

    for path in ("/metrics", "/healthz", "/readyz"):
        wrong = https(port, path, pki, auth=(USER, "not-the-password"))
        assert wrong.status == 401, path
        assert wrong.headers["www-authenticate"].startswith("Basic")
    assert https(port, "/metrics", pki, auth=("nobody", PASSWORD)).status == 401
    assert https(port, "/metrics", pki, auth=None).status == 401

    after = metrics(process, pki)
    assert rejected(after, "unauthorized") == 4
    assert rejected(after, "no_credentials") == 1

    # Plain HTTP on the HTTPS port gets no answer from the exporter.
    with pytest.raises((OSError, http.client.HTTPException)):
        resp = harness.http_request(port, "GET", "/metrics", timeout=3)
        assert resp.status != 200
        raise OSError(f"answered {resp.status}")

    process.stop()
    log = process.output
    assert PASSWORD not in log and "not-the-password" not in log
    assert hash_ not in log and hash_[7:29] not in log  # nor the salt


def test_exposition_over_https_passes_promtool(lifeguard, pki, tmp_path):
    web = tmp_path / "web.yml"
    web.write_text(web_config(pki, users={USER: bcrypt(PASSWORD)}))
    process = start(lifeguard, web, pki=pki)
    result = harness.promtool_check_metrics(https(process.metrics_port, "/metrics", pki).body)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "" and result.stderr.strip() == "", result.stdout + result.stderr


def test_require_and_verify_client_cert_refuses_the_handshake(lifeguard, pki, tmp_path):
    web = tmp_path / "web.yml"
    web.write_text(web_config(pki, client_auth="RequireAndVerifyClientCert"))
    process = start(lifeguard, web, pki=pki, auth=None, client_cert="client")
    port = process.metrics_port

    assert https(port, "/metrics", pki, auth=None, client_cert="client").status == 200
    for client_cert in (None, "rogue"):
        with pytest.raises((ssl.SSLError, ConnectionError, http.client.RemoteDisconnected)):
            https(port, "/healthz", pki, auth=None, client_cert=client_cert)

    # Seen from openssl's side with TLS 1.2, where the server's verdict is part of the handshake itself.
    s_client = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-CAfile", str(pki.ca), "-tls1_2", "-brief"],
        input="", capture_output=True, text=True, timeout=20,
    )
    assert s_client.returncode != 0, s_client.stdout + s_client.stderr
    assert "alert" in s_client.stderr.lower() or "error" in s_client.stderr.lower(), s_client.stderr


def test_prometheus_scrapes_over_https_with_basic_auth_and_a_client_certificate(lifeguard, pki, tmp_path):
    web = tmp_path / "web.yml"
    web.write_text(web_config(pki, client_auth="RequireAndVerifyClientCert", users={USER: bcrypt(PASSWORD)}))
    process = start(lifeguard, web, pki=pki, client_cert="client")
    server = prometheus.PrometheusServer(
        tmp_path, [f"127.0.0.1:{process.metrics_port}"], rules=[],
        scrape_options={
            "scheme": "https",
            "tls_config": {"ca_file": str(pki.ca), "cert_file": str(pki.path("client.crt")),
                           "key_file": str(pki.path("client.key"))},
            "basic_auth": {"username": USER, "password": PASSWORD},
        },
    )
    try:
        server.start()
        harness.wait_until(lambda: server.query(f'up{{job="{prometheus.JOB}"}} == 1'), 30,
                           what="Prometheus scrapes lifeguard over HTTPS (up == 1)")
        harness.wait_until(lambda: server.query("lifeguard_tls_certificate_expiry_timestamp_seconds"), 15,
                           what="the certificate expiry series in Prometheus")
        result = server.query("lifeguard_tls_certificate_expiry_timestamp_seconds")
        assert {r["metric"]["file"] for r in result} == {str(pki.path("server.crt")), str(pki.ca)}
    finally:
        server.stop()
    exposition = metrics(process, pki, client_cert="client")
    assert rejected(exposition, "unauthorized") == 0
    assert rejected(exposition, "no_credentials") == 0


def test_sighup_reloads_the_web_config_and_keeps_it_when_broken(lifeguard, pki, tmp_path):
    web = tmp_path / "web.yml"
    web.write_text(web_config(pki, users={USER: bcrypt(PASSWORD)}))
    process = start(lifeguard, web, pki=pki)
    port = process.metrics_port

    def reload_result(**kwargs) -> float:
        return metrics(process, pki, **kwargs).value("lifeguard_config_last_reload_successful")

    web.write_text(web_config(pki, users={USER: "not-a-bcrypt-hash"}))
    os.kill(process.pid, signal.SIGHUP)
    harness.wait_until(lambda: reload_result() == 0, 10, what="lifeguard_config_last_reload_successful == 0")
    assert https(port, "/healthz", pki).status == 200  # the old configuration still serves
    assert "basic_auth_users.prometheus: not a bcrypt hash" in process.stderr

    # A new password, and client certificates required from now on: the new daemon on the same port enforces both.
    web.write_text(web_config(pki, client_auth="RequireAndVerifyClientCert", users={USER: bcrypt("second-Secret")}))
    os.kill(process.pid, signal.SIGHUP)
    harness.wait_until(lambda: _reloaded(process, pki), 10, what="the reloaded web configuration in force")
    assert https(port, "/healthz", pki, auth=(USER, "second-Secret"), client_cert="client").status == 200
    assert https(port, "/healthz", pki, auth=(USER, PASSWORD), client_cert="client").status == 401
    with pytest.raises((ssl.SSLError, ConnectionError, http.client.RemoteDisconnected)):
        https(port, "/healthz", pki, auth=(USER, "second-Secret"))
    assert reload_result(auth=(USER, "second-Secret"), client_cert="client") == 1
    assert "not-a-bcrypt-hash" not in process.output


def _reloaded(process, pki: PKI) -> bool:
    try:
        return https(process.metrics_port, "/healthz", pki, auth=(USER, "second-Secret"), client_cert="client",
                     timeout=2).status == 200
    except (OSError, ssl.SSLError):
        return False


def test_check_config_names_the_wrong_part_and_never_prints_a_hash(lifeguard, pki, tmp_path):
    hash_ = bcrypt(PASSWORD)
    web = tmp_path / "web.yml"

    web.write_text(web_config(pki, users={USER: hash_}))
    ok = lifeguard.run("check-config", "--upstream", UPSTREAM, "--metrics-web-config", str(web))
    assert ok.returncode == 0, ok.stderr
    assert f'metrics_web_config = "{web}"' in ok.stdout
    assert "basic auth (1 user)" in ok.stdout
    assert hash_ not in ok.stdout + ok.stderr

    cases = [
        (web_config(pki, users={USER: hash_}, extra_tls="min_version: TLS10"),
         "tls_server_config.min_version: TLS10 is not supported"),
        (web_config(pki, users={USER: hash_}, extra_tls="cipher_suite: [x]"),
         "tls_server_config.cipher_suite: unknown key"),
        (web_config(pki, users={USER: PASSWORD}), f"basic_auth_users.{USER}: not a bcrypt hash"),
        (web_config(pki, client_auth="RequestClientCert").replace("client_ca_file", "client_ca_fil"),
         "tls_server_config.client_ca_fil: unknown key"),
        (web_config(pki).replace("server.key", "client.key"), "the key does not belong to the first certificate"),
        (web_config(pki).replace("server.crt", "missing.crt"), "no such file"),
        ("tls_server_config: [\n", "invalid YAML"),
    ]
    for text, expected in cases:
        web.write_text(text)
        result = lifeguard.run("check-config", "--upstream", UPSTREAM, "--metrics-web-config", str(web))
        assert result.returncode == 2, (text, result.stdout, result.stderr)
        assert expected in result.stderr, (expected, result.stderr)
        assert f"{web}:" in result.stderr
        assert PASSWORD not in result.stdout + result.stderr
        assert hash_ not in result.stdout + result.stderr

    expired = make_pki(tmp_path / "expired", server_days=0)
    web.write_text(web_config(expired))
    time.sleep(1)
    result = lifeguard.run("check-config", "--upstream", UPSTREAM, "--metrics-web-config", str(web))
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"{expired.path('server.crt')}: a certificate expired on" in result.stderr
