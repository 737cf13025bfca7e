#!/usr/bin/env python3
"""Structural checks of deploy/ that no installed tool makes: the compose stack and the Kubernetes manifests.

    check_deploy.py                    run every check; exit 1 on a problem
    check_deploy.py --core-manifests   print the Kubernetes manifests of core API kinds (for kubernetes-validate)
    check_deploy.py --rule-groups FILE write the PrometheusRule's spec as a rule file (for `promtool check rules`)

There is no container engine here, so `docker compose config` cannot run: the compose file is checked against the
compose specification's shape and against the files it mounts. kubernetes-validate has no schemas for the
Prometheus Operator's CRDs, so PodMonitor and PrometheusRule are checked here against the fields those CRDs define.
Beyond shape, the pieces must agree with each other: ports, paths, names, the drain timeout, the shutdown budget.
Needs PyYAML (in the project's .venv).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import re
import sys
import tomllib
from pathlib import Path

import yaml

DEPLOY = Path(__file__).resolve().parent
ROOT = DEPLOY.parent
K8S = DEPLOY / "kubernetes"
CORE_KINDS = {"ConfigMap", "Secret", "Deployment", "Service", "ServiceAccount", "NetworkPolicy",
              "PodDisruptionBudget", "HorizontalPodAutoscaler", "StatefulSet", "DaemonSet"}
CRD_KINDS = {"PodMonitor", "PrometheusRule"}
DURATION = re.compile(r"^((\d+)(ms|s|m|h|d|w|y))+$")


class Problems(list):
    def add(self, where: str, message: str) -> None:
        self.append(f"{where}: {message}")


def duration_seconds(text: str | int | float) -> float:
    """Lifeguard's durations: 250ms, 30s, 5m, 1h or plain seconds."""
    if isinstance(text, (int, float)):
        return float(text)
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*", str(text))
    if not m:
        raise ValueError(f"not a duration: {text!r}")
    return float(m.group(1)) * {"ms": 0.001, "s": 1, None: 1, "m": 60, "h": 3600}[m.group(2)]


def split_hostport(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return host.strip("[]"), int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_lifeguard_toml(where: str, config: dict, problems: Problems) -> None:
    """What a container deployment needs of the configuration (lifeguard check-config checks the rest)."""
    listen_host, _ = split_hostport(config.get("listen", "127.0.0.1:6432"))
    metrics_host, _ = split_hostport(config.get("metrics_listen", "127.0.0.1:9187"))
    if not is_loopback(listen_host) and "auth_type" not in config:
        problems.add(where, f"listen on {listen_host} is not loopback: it needs auth_type")
    if is_loopback(metrics_host):
        problems.add(where, "metrics_listen is loopback: Prometheus and the probes could not reach it")
    for key in ("upstream", "password"):
        if key in config:
            problems.add(where, f"`{key}` belongs in a secret (LIFEGUARD_UPSTREAM), not in the configuration file")


# ----------------------------------------------------------------------------------------------------------------
# docker-compose.yml

COMPOSE_TOP = {"name", "services", "volumes", "networks", "configs", "secrets", "include"}
REQUIRED_SERVICES = ("postgres", "lifeguard", "loadgen", "prometheus", "grafana")
DEPENDS_CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}


def bind_mounts(service: dict) -> dict[str, Path]:
    """Container path -> host path of a service's relative bind mounts (short syntax)."""
    mounts = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, str) and volume.startswith("."):
            source, target = volume.split(":")[:2]
            mounts[target] = (DEPLOY / source).resolve()
    return mounts


def check_compose(problems: Problems) -> None:
    path = DEPLOY / "docker-compose.yml"
    where = "deploy/docker-compose.yml"
    compose = yaml.safe_load(path.read_text())
    for key in compose:
        if key not in COMPOSE_TOP and not key.startswith("x-"):
            problems.add(where, f"unknown top-level key {key!r}" + (" (obsolete: remove it)" if key == "version" else ""))
    services: dict = compose.get("services") or {}
    for name in REQUIRED_SERVICES:
        if name not in services:
            problems.add(where, f"no service {name!r}")
    for name, service in services.items():
        sw = f"{where}: service {name}"
        image = service.get("image")
        if not image and "build" not in service:
            problems.add(sw, "needs image or build")
        if image and "build" not in service and (":" not in image.rsplit("/", 1)[-1] or image.endswith(":latest")):
            problems.add(sw, f"image {image!r} needs a fixed tag")
        build = service.get("build")
        if build:
            context = (DEPLOY / (build if isinstance(build, str) else build.get("context", "."))).resolve()
            dockerfile = context / (build.get("dockerfile", "Dockerfile") if isinstance(build, dict) else "Dockerfile")
            if not (context / "Package.swift").exists() and name == "lifeguard":
                problems.add(sw, f"build context {context} has no Package.swift")
            if not dockerfile.is_file():
                problems.add(sw, f"dockerfile {dockerfile} does not exist")
        for target, source in bind_mounts(service).items():
            if not source.exists():
                problems.add(sw, f"mounts {source} (at {target}), which does not exist")
        depends = service.get("depends_on", [])
        for dep, spec in (depends.items() if isinstance(depends, dict) else ((d, {}) for d in depends)):
            if dep not in services:
                problems.add(sw, f"depends on unknown service {dep!r}")
                continue
            condition = (spec or {}).get("condition", "service_started")
            if condition not in DEPENDS_CONDITIONS:
                problems.add(sw, f"depends_on {dep}: unknown condition {condition!r}")
            if condition == "service_healthy" and "healthcheck" not in services[dep] and "build" not in services[dep]:
                problems.add(sw, f"waits for {dep} to be healthy, but {dep} has no healthcheck")
        network_mode = service.get("network_mode", "")
        if network_mode.startswith("service:"):
            if network_mode[8:] not in services:
                problems.add(sw, f"network_mode names unknown service {network_mode[8:]!r}")
            if service.get("ports"):
                problems.add(sw, "shares another service's network: it cannot publish ports")
        for port in service.get("ports", []):
            if not str(port).startswith("127.0.0.1:"):
                problems.add(sw, f"port {port!r} is published on every interface: publish on 127.0.0.1")
        for key, value in (service.get("environment") or {}).items():
            if isinstance(value, (dict, list)):
                problems.add(sw, f"environment {key} must be a string")
    if any(p.startswith(where) for p in problems):
        return

    # The pieces agree: Lifeguard's configuration, the load generator, Prometheus, Grafana.
    lifeguard = services["lifeguard"]
    env = lifeguard.get("environment") or {}
    config_path = env.get("LIFEGUARD_CONFIG")
    mounts = bind_mounts(lifeguard)
    if config_path not in mounts:
        problems.add(where, f"LIFEGUARD_CONFIG={config_path!r} is not a file mounted into the lifeguard service")
        return
    config = tomllib.loads(mounts[config_path].read_text())
    check_lifeguard_toml(str(mounts[config_path].relative_to(ROOT)), config, problems)
    if "LIFEGUARD_UPSTREAM" not in env and "DATABASE_URL" not in env:
        problems.add(where, "lifeguard has no LIFEGUARD_UPSTREAM or DATABASE_URL")
    listen_host, listen_port = split_hostport(config.get("listen", "127.0.0.1:6432"))
    _, metrics_port = split_hostport(config.get("metrics_listen", "127.0.0.1:9187"))
    loadgen = services["loadgen"]
    if is_loopback(listen_host) and loadgen.get("network_mode") != "service:lifeguard":
        problems.add(where, "Lifeguard listens on loopback: the load generator must use network_mode service:lifeguard")
    script = next((p for t, p in bind_mounts(loadgen).items() if t.endswith(".sh")), None)
    if script is None or f"-p {listen_port}" not in script.read_text():
        problems.add(where, f"the load generator's script does not connect to port {listen_port}")
    grace = duration_seconds(lifeguard.get("stop_grace_period", "10s"))
    drain = duration_seconds(config.get("drain_timeout", "30s"))
    if grace <= drain:
        problems.add(where, f"lifeguard stop_grace_period {grace:g}s must exceed drain_timeout {drain:g}s")
    if not any(p.endswith(f"{metrics_port}:{metrics_port}") for p in lifeguard.get("ports", [])):
        problems.add(where, f"lifeguard does not publish its metrics port {metrics_port}")

    prometheus = services["prometheus"]
    pmounts = bind_mounts(prometheus)
    config_file = next((a.split("=", 1)[1] for a in prometheus.get("command", []) if a.startswith("--config.file=")),
                       None)
    if config_file not in pmounts:
        problems.add(where, f"prometheus --config.file={config_file} is not mounted")
        return
    pconfig = yaml.safe_load(pmounts[config_file].read_text())
    rules_dir = next((t for t, s in pmounts.items() if s == (ROOT / "alerts").resolve()), None)
    if rules_dir is None:
        problems.add(where, "prometheus does not mount alerts/")
    elif not any(Path(g).parent == Path(rules_dir) for g in pconfig.get("rule_files", [])):
        problems.add(where, f"prometheus.yml rule_files do not load {rules_dir}/*.yml (where alerts/ is mounted)")
    jobs = {j["job_name"]: [t for sc in j.get("static_configs", []) for t in sc.get("targets", [])]
            for j in pconfig.get("scrape_configs", [])}
    lifeguard_jobs = {name: t for name, t in jobs.items() if f"lifeguard:{metrics_port}" in t}
    if not lifeguard_jobs:
        problems.add(where, f"prometheus.yml scrapes no target lifeguard:{metrics_port}")
    for name in lifeguard_jobs:
        if not name.startswith("lifeguard"):
            problems.add(where, f"scrape job {name!r}: the alert rules recognise Lifeguard jobs by the prefix lifeguard")

    grafana = services["grafana"]
    gmounts = bind_mounts(grafana)
    dash_dir = next((t for t, s in gmounts.items() if s == (ROOT / "dashboards").resolve()), None)
    prov = next((s for t, s in gmounts.items() if t == "/etc/grafana/provisioning"), None)
    if dash_dir is None or prov is None:
        problems.add(where, "grafana must mount dashboards/ and deploy/grafana/provisioning")
        return
    providers = [p for f in sorted((prov / "dashboards").glob("*.y*ml")) for p in yaml.safe_load(f.read_text())["providers"]]
    if not any(p.get("options", {}).get("path") == dash_dir for p in providers):
        problems.add(where, f"no Grafana dashboard provider reads {dash_dir}, where dashboards/ is mounted")
    sources = [d for f in sorted((prov / "datasources").glob("*.y*ml")) for d in yaml.safe_load(f.read_text())["datasources"]]
    if not any(d.get("type") == "prometheus" and d.get("url", "").startswith("http://prometheus:") and d.get("isDefault")
               for d in sources):
        problems.add(where, "no default Prometheus data source at http://prometheus:... is provisioned")
    home = (grafana.get("environment") or {}).get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
    if home and not (ROOT / "dashboards" / Path(home).relative_to(dash_dir)).is_file():
        problems.add(where, f"the home dashboard {home} is not in dashboards/")


# ----------------------------------------------------------------------------------------------------------------
# Kubernetes


def load_manifests() -> dict[str, list[tuple[Path, dict]]]:
    by_kind: dict[str, list[tuple[Path, dict]]] = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                by_kind.setdefault(doc.get("kind", "?"), []).append((path, doc))
    return by_kind


def only(by_kind, kind, problems: Problems) -> tuple[Path, dict] | tuple[None, None]:
    items = by_kind.get(kind, [])
    if len(items) != 1:
        problems.add("deploy/kubernetes", f"expected one {kind}, found {len(items)}")
        return None, None
    return items[0]


def check_string_map(where: str, value, problems: Problems) -> None:
    if value is None:
        return
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        problems.add(where, "must be a map of strings to strings")


def check_prometheusrule(doc: dict, problems: Problems) -> None:
    where = "deploy/kubernetes/prometheusrule.yaml"
    if doc.get("apiVersion") != "monitoring.coreos.com/v1":
        problems.add(where, "apiVersion must be monitoring.coreos.com/v1")
    if not doc.get("metadata", {}).get("name"):
        problems.add(where, "metadata.name is required")
    unknown = set(doc.get("spec", {})) - {"groups"}
    if unknown:
        problems.add(where, f"unknown spec fields {sorted(unknown)}")
    groups = doc.get("spec", {}).get("groups")
    if not isinstance(groups, list) or not groups:
        problems.add(where, "spec.groups must be a non-empty list")
        return
    names = set()
    for group in groups:
        gw = f"{where}: group {group.get('name')!r}"
        unknown = set(group) - {"name", "interval", "rules", "partial_response_strategy", "limit", "query_offset",
                                "labels"}
        if unknown:
            problems.add(gw, f"unknown fields {sorted(unknown)}")
        if not group.get("name") or group["name"] in names:
            problems.add(gw, "needs a unique name")
        names.add(group.get("name"))
        if "interval" in group and not DURATION.match(str(group["interval"])):
            problems.add(gw, f"interval {group['interval']!r} is not a Prometheus duration")
        for rule in group.get("rules") or []:
            rw = f"{gw} rule {rule.get('alert') or rule.get('record')!r}"
            unknown = set(rule) - {"alert", "record", "expr", "for", "keep_firing_for", "labels", "annotations"}
            if unknown:
                problems.add(rw, f"unknown fields {sorted(unknown)}")
            if ("alert" in rule) == ("record" in rule):
                problems.add(rw, "needs exactly one of alert and record")
            if not isinstance(rule.get("expr"), (str, int)) or str(rule.get("expr")).strip() == "":
                problems.add(rw, "expr must be a non-empty string")
            for key in ("for", "keep_firing_for"):
                if key in rule and not DURATION.match(str(rule[key])):
                    problems.add(rw, f"{key} {rule[key]!r} is not a Prometheus duration")
            if "record" in rule and ("for" in rule or "annotations" in rule):
                problems.add(rw, "a recording rule takes neither for nor annotations")
            check_string_map(f"{rw} labels", rule.get("labels"), problems)
            check_string_map(f"{rw} annotations", rule.get("annotations"), problems)


def container_ports(pod_spec: dict) -> dict[str, tuple[str, int]]:
    return {p["name"]: (c["name"], p["containerPort"])
            for c in pod_spec.get("initContainers", []) + pod_spec.get("containers", []) for p in c.get("ports", [])
            if "name" in p}


def secret_refs(endpoint: dict) -> list[tuple[str, dict]]:
    """(where, {name, key}) of every secret a podMetricsEndpoint reads (tlsConfig, basicAuth)."""
    refs = []
    for part in ("ca", "cert"):
        ref = ((endpoint.get("tlsConfig") or {}).get(part) or {}).get("secret")
        if ref:
            refs.append((f"tlsConfig.{part}.secret", ref))
    if (endpoint.get("tlsConfig") or {}).get("keySecret"):
        refs.append(("tlsConfig.keySecret", endpoint["tlsConfig"]["keySecret"]))
    for part in ("username", "password"):
        ref = (endpoint.get("basicAuth") or {}).get(part)
        if ref:
            refs.append((f"basicAuth.{part}", ref))
    return refs


def check_podmonitor(doc: dict, pod_labels: dict, ports: dict, problems: Problems,
                     secrets: dict[str, dict] | None = None, web_config: bool = False) -> None:
    where = "deploy/kubernetes/podmonitor.yaml"
    if doc.get("apiVersion") != "monitoring.coreos.com/v1":
        problems.add(where, "apiVersion must be monitoring.coreos.com/v1")
    spec = doc.get("spec", {})
    unknown = set(spec) - {"selector", "podMetricsEndpoints", "namespaceSelector", "jobLabel", "podTargetLabels",
                           "sampleLimit", "targetLimit", "labelLimit", "attachMetadata"}
    if unknown:
        problems.add(where, f"unknown spec fields {sorted(unknown)}")
    match = spec.get("selector", {}).get("matchLabels", {})
    if not match or any(pod_labels.get(k) != v for k, v in match.items()):
        problems.add(where, f"selector {match} does not select the Deployment's pods (labels {pod_labels})")
    endpoints = spec.get("podMetricsEndpoints") or []
    if not endpoints:
        problems.add(where, "no podMetricsEndpoints")
    for endpoint in endpoints:
        unknown = set(endpoint) - {"port", "portNumber", "targetPort", "path", "scheme", "interval", "scrapeTimeout",
                                   "honorLabels", "honorTimestamps", "relabelings", "metricRelabelings", "params",
                                   "enableHttp2", "followRedirects", "filterRunning", "proxyUrl", "tlsConfig",
                                   "basicAuth"}
        if unknown:
            problems.add(where, f"unknown podMetricsEndpoints fields {sorted(unknown)}")
        if endpoint.get("port") not in ports or ports[endpoint["port"]][0] != "lifeguard":
            problems.add(where, f"port {endpoint.get('port')!r} is not a named port of the lifeguard container")
        if endpoint.get("path", "/metrics") != "/metrics":
            problems.add(where, "path must be /metrics")
        # The sidecar serves HTTPS with basic auth when it has a web configuration: the scrape must match.
        if web_config and (endpoint.get("scheme") != "https" or "basicAuth" not in endpoint):
            problems.add(where, "the sidecar has LIFEGUARD_METRICS_WEB_CONFIG: scrape with scheme: https and basicAuth")
        unknown = set(endpoint.get("tlsConfig") or {}) - {"ca", "cert", "keySecret", "serverName",
                                                           "insecureSkipVerify"}
        if unknown:
            problems.add(where, f"unknown tlsConfig fields {sorted(unknown)}")
        for part, ref in secret_refs(endpoint):
            data = (secrets or {}).get(ref.get("name"))
            if data is None or ref.get("key") not in data:
                problems.add(where, f"{part} reads secret {ref.get('name')!r} key {ref.get('key')!r}, "
                                    "which no Secret of deploy/kubernetes has")
        for key in ("interval", "scrapeTimeout"):
            if key in endpoint and not DURATION.match(str(endpoint[key])):
                problems.add(where, f"{key} {endpoint[key]!r} is not a Prometheus duration")
        for relabel in endpoint.get("relabelings", []):
            unknown = set(relabel) - {"sourceLabels", "separator", "targetLabel", "regex", "modulus", "replacement",
                                      "action"}
            if unknown:
                problems.add(where, f"unknown relabeling fields {sorted(unknown)}")
            if relabel.get("targetLabel") == "job":
                source = relabel.get("sourceLabels", [""])[0]
                label = source.removeprefix("__meta_kubernetes_pod_label_")
                if not any(re.sub(r"[^a-zA-Z0-9_]", "_", k) == label for k in pod_labels):
                    problems.add(where, f"the job relabeling reads {source}, a label the pods do not have")
                if not str(relabel.get("replacement", "")).startswith("lifeguard"):
                    problems.add(where, "the job must start with lifeguard: the alert rules select job=~\"lifeguard.*\"")


def probe(container: dict, kind: str) -> dict:
    return (container.get(kind) or {}).get("httpGet") or {}


def check_kubernetes(problems: Problems) -> None:
    by_kind = load_manifests()
    for kind, items in by_kind.items():
        if kind not in CORE_KINDS | CRD_KINDS | {"Kustomization"}:
            problems.add(str(items[0][0].relative_to(ROOT)), f"unexpected kind {kind!r}")
    # kustomization.yaml lists every manifest.
    _, kustomization = only(by_kind, "Kustomization", problems)
    manifests = {p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml"}
    if kustomization is not None and set(kustomization.get("resources", [])) != manifests:
        problems.add("deploy/kubernetes/kustomization.yaml", f"resources must be exactly {sorted(manifests)}")

    _, deployment = only(by_kind, "Deployment", problems)
    _, configmap = only(by_kind, "ConfigMap", problems)
    secrets = {doc["metadata"]["name"]: {**doc.get("stringData", {}), **doc.get("data", {})}
               for _, doc in by_kind.get("Secret", [])}
    if deployment is None or configmap is None:
        return
    where = "deploy/kubernetes/deployment.yaml"
    pod = deployment["spec"]["template"]
    spec = pod["spec"]
    sidecars = [c for c in spec.get("initContainers", []) if c.get("restartPolicy") == "Always"]
    lifeguard = next((c for c in sidecars if c["name"] == "lifeguard"), None)
    if lifeguard is None:
        problems.add(where, "no native sidecar: an init container `lifeguard` with restartPolicy: Always")
        return
    if not spec.get("containers"):
        problems.add(where, "no application container beside the sidecar")
    ports = container_ports(spec)
    # Probes.
    for kind, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz"), ("startupProbe", "/healthz")):
        get = probe(lifeguard, kind)
        if get.get("path") != path:
            problems.add(where, f"lifeguard {kind} must GET {path}")
        port = get.get("port")
        if isinstance(port, str) and port not in ports:
            problems.add(where, f"lifeguard {kind} uses port {port!r}, which no container declares")
    # Security and resources.
    sc = lifeguard.get("securityContext", {})
    for key, value in (("runAsNonRoot", True), ("readOnlyRootFilesystem", True), ("allowPrivilegeEscalation", False)):
        if sc.get(key) != value:
            problems.add(where, f"lifeguard securityContext.{key} must be {str(value).lower()}")
    if "ALL" not in sc.get("capabilities", {}).get("drop", []):
        problems.add(where, "lifeguard must drop ALL capabilities")
    if sc.get("runAsUser", 0) == 0:
        problems.add(where, "lifeguard needs a non-zero runAsUser (the image's user is 10001)")
    for part in ("requests", "limits"):
        if not {"cpu", "memory"} <= set(lifeguard.get("resources", {}).get(part, {})):
            problems.add(where, f"lifeguard resources.{part} needs cpu and memory")
    # Configuration: the ConfigMap mounted where LIFEGUARD_CONFIG says, the upstream from the Secret.
    env = {e["name"]: e for e in lifeguard.get("env", [])}
    config_path = env.get("LIFEGUARD_CONFIG", {}).get("value", "")
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    mount = next((m for m in lifeguard.get("volumeMounts", []) if config_path.startswith(m["mountPath"] + "/")), None)
    key = config_path.rsplit("/", 1)[-1]
    cm_name = configmap["metadata"]["name"]
    if mount is None or volumes.get(mount["name"], {}).get("configMap", {}).get("name") != cm_name:
        problems.add(where, f"LIFEGUARD_CONFIG={config_path!r} is not in a mount of the ConfigMap {cm_name}")
    if key not in configmap.get("data", {}):
        problems.add("deploy/kubernetes/configmap.yaml", f"has no key {key!r} (LIFEGUARD_CONFIG)")
        return
    upstream = env.get("LIFEGUARD_UPSTREAM") or env.get("DATABASE_URL")
    ref = ((upstream or {}).get("valueFrom") or {}).get("secretKeyRef")
    if not ref:
        problems.add(where, "the upstream (LIFEGUARD_UPSTREAM or DATABASE_URL) must come from a secretKeyRef")
    elif ref["key"] not in secrets.get(ref["name"], {}):
        problems.add(where, f"secretKeyRef {ref} is not in a Secret of deploy/kubernetes")
    # The web configuration, when set, is a file of a mounted Secret.
    web_config = env.get("LIFEGUARD_METRICS_WEB_CONFIG", {}).get("value")
    if web_config:
        web_mount = next((m for m in lifeguard.get("volumeMounts", [])
                          if web_config.startswith(m["mountPath"] + "/")), None)
        secret_name = volumes.get((web_mount or {}).get("name"), {}).get("secret", {}).get("secretName")
        if secret_name not in secrets or web_config.rsplit("/", 1)[-1] not in secrets[secret_name]:
            problems.add(where, f"LIFEGUARD_METRICS_WEB_CONFIG={web_config!r} is not a key of a mounted Secret")
        for kind in ("readinessProbe", "livenessProbe", "startupProbe"):
            get = probe(lifeguard, kind)
            headers = {h.get("name", "").lower() for h in get.get("httpHeaders", [])}
            if get.get("scheme") != "HTTPS" or "authorization" not in headers:
                problems.add(where, f"lifeguard {kind}: the metrics port needs HTTPS and an Authorization header "
                                    "(metrics_web_config protects the probes too)")
    config = tomllib.loads(configmap["data"][key])
    check_lifeguard_toml("deploy/kubernetes/configmap.yaml", config, problems)
    _, metrics_port = split_hostport(config.get("metrics_listen", "127.0.0.1:9187"))
    _, listen_port = split_hostport(config.get("listen", "127.0.0.1:6432"))
    if ports.get("metrics") != ("lifeguard", metrics_port):
        problems.add(where, f"lifeguard's port `metrics` must be metrics_listen's port {metrics_port}")
    app_env = {e["name"]: e.get("value", "") for c in spec["containers"] for e in c.get("env", [])}
    if not any(f":{listen_port}/" in v for v in app_env.values()):
        problems.add(where, f"no application container connects to Lifeguard's port {listen_port}")
    # Shutdown: preStop waits at most drain_timeout, and the grace period covers every step.
    drain = duration_seconds(config.get("drain_timeout", "30s"))
    command = (((lifeguard.get("lifecycle") or {}).get("preStop") or {}).get("exec") or {}).get("command", [])
    if command[:2] != ["lifeguard-probe", "wait-idle"] or len(command) != 3 or float(command[2]) != drain:
        problems.add(where, f"lifeguard preStop must be [lifeguard-probe, wait-idle, {drain:g}] (drain_timeout)")
        return
    app_sleep = sum((((c.get("lifecycle") or {}).get("preStop") or {}).get("sleep") or {}).get("seconds", 0)
                    for c in spec["containers"])
    grace = spec.get("terminationGracePeriodSeconds", 30)
    budget = app_sleep + float(command[2]) + drain
    if grace <= budget:
        problems.add(where, f"terminationGracePeriodSeconds {grace} must exceed app preStop {app_sleep}s + "
                     f"lifeguard preStop {command[2]}s + drain_timeout {drain:g}s = {budget:g}s")

    _, podmonitor = only(by_kind, "PodMonitor", problems)
    if podmonitor is not None:
        check_podmonitor(podmonitor, pod["metadata"].get("labels", {}), ports, problems, secrets, bool(web_config))
    _, rule = only(by_kind, "PrometheusRule", problems)
    if rule is not None:
        check_prometheusrule(rule, problems)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--core-manifests", action="store_true")
    parser.add_argument("--rule-groups", type=Path)
    args = parser.parse_args()
    if args.core_manifests:
        for kind, items in sorted(load_manifests().items()):
            if kind in CORE_KINDS:
                print("\n".join(sorted({str(p) for p, _ in items})))
        return 0
    if args.rule_groups:
        rules = [d for _, d in load_manifests().get("PrometheusRule", [])]
        if len(rules) != 1:
            print("error: expected one PrometheusRule", file=sys.stderr)
            return 1
        args.rule_groups.write_text(json.dumps({"groups": rules[0]["spec"]["groups"]}, indent=1))
        return 0
    problems = Problems()
    check_compose(problems)
    check_kubernetes(problems)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    print(f"deploy/: compose stack and Kubernetes manifests: {'OK' if not problems else f'{len(problems)} problem(s)'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
