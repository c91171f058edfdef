#!/usr/bin/env python3
"""Offline checks of one rendered kustomize variant (the base deploy/kubernetes, or an overlay
such as deploy/overlays/ha); run by deploy/validate.sh for each.

usage: check_manifests.py [--same-config-as BASE_RENDERED.yaml] RENDERED.yaml SECRET_EXAMPLE.yaml
                          ALERTMANAGER.yml RULES_OUT.yml K8S_VERSION...

1. Every resource against the JSON schema of its kind: core kinds with kubernetes-validate's
   bundled schemas (strict: unknown fields are errors) for each Kubernetes version given;
   ServiceMonitor and PrometheusRule with crd-schemas.yaml beside this file. Any other kind
   is an error.
2. That the resources fit together (selectors, port names, volumes, Secret keys, the paths in
   config.yml, grace periods) and keep the security settings docs/operations.md promises (Security notes); that
   several replicas never run on per-replica state (replicas > 1 needs state.backend redis);
   and, in a variant that ships Redis, that its Deployment, Service and NetworkPolicy fit the
   service's (selectors kept apart, the Secret's redis-url names the Service and port, probes,
   no persistence, maxmemory below the memory limit, non-root, resources, only the service's
   pods admitted on 6379).
3. With --same-config-as: the variant's config.yml equals the base's except for state:, and
   the other ConfigMap keys (templates) are the same (an overlay's config.yml is a full copy).
4. The PrometheusRule: severity label, summary and description on every alert, and only
   metrics the service exports. Its spec is written to RULES_OUT for promtool.
Prints one line per check; exits 1 if any failed.
"""

import os
import re
import sys
import urllib.parse
from collections import Counter

import jsonschema
import kubernetes_validate
import yaml

HERE = os.path.dirname(os.path.abspath(__file__))

CORE_KINDS = {"Deployment", "Service", "ConfigMap", "PodDisruptionBudget", "Secret", "NetworkPolicy"}
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}
SERVICE = "alertmanager-wecom"        # Deployment, Service, PDB, ServiceMonitor, PrometheusRule
REDIS = "alertmanager-wecom-redis"    # Deployment, Service, NetworkPolicy of deploy/overlays/ha
# What a variant renders: the base's resources, plus Redis' in a variant that ships one.
BASE_KINDS = Counter(["Deployment", "Service", "ConfigMap", "PodDisruptionBudget", "ServiceMonitor", "PrometheusRule"])
REDIS_KINDS = Counter(["Deployment", "Service", "NetworkPolicy"])
BACKENDS = {"memory", "redis"}

# What the rules may query: the service's metrics (docs/operations.md "Metrics", plus the reload gauges
# that come with hot reload) and the scrape's `up`.
KNOWN_METRICS = {
    "up",
    "alertmanager_wecom_alerts_received_total",
    "alertmanager_wecom_alerts_unrouted_total",
    "alertmanager_wecom_webhooks_received_total",
    "alertmanager_wecom_notifications_total",
    "alertmanager_wecom_messages_cut_total",
    "alertmanager_wecom_wecom_api_requests_total",
    "alertmanager_wecom_wecom_api_request_duration_seconds_bucket",
    "alertmanager_wecom_wecom_api_request_duration_seconds_sum",
    "alertmanager_wecom_wecom_api_request_duration_seconds_count",
    "alertmanager_wecom_token_refreshes_total",
    "alertmanager_wecom_token_failures_total",
    "alertmanager_wecom_invalid_recipients_total",
    "alertmanager_wecom_member_rate_limited_total",
    "alertmanager_wecom_storm_held_total",
    "alertmanager_wecom_storm_digested_total",
    "alertmanager_wecom_storm_digest_messages_total",
    "alertmanager_wecom_storm_represented_total",
    "alertmanager_wecom_storm_oldest_pending_seconds",
    "alertmanager_wecom_build_info",
    "alertmanager_wecom_config_last_reload_successful",
    "alertmanager_wecom_config_last_reload_success_timestamp_seconds",
    "alertmanager_wecom_state_degraded",
    "alertmanager_wecom_state_backend_info",
    "alertmanager_wecom_process_cpu_seconds_total",
    "alertmanager_wecom_process_resident_memory_bytes",
    "alertmanager_wecom_process_virtual_memory_bytes",
    "alertmanager_wecom_process_open_fds",
    "alertmanager_wecom_process_max_fds",
    "alertmanager_wecom_process_start_time_seconds",
    "alertmanager_wecom_process_threads",
}
PROMQL_WORDS = {
    # aggregations, functions and keywords used (or plausibly used) in rules
    "sum", "min", "max", "avg", "count", "topk", "bottomk", "quantile", "stddev", "stdvar", "group",
    "count_values", "rate", "irate", "increase", "delta", "idelta", "deriv", "absent",
    "absent_over_time", "max_over_time", "min_over_time", "avg_over_time", "sum_over_time",
    "count_over_time", "last_over_time", "present_over_time", "changes", "resets", "time",
    "timestamp", "vector", "scalar", "clamp_min", "clamp_max", "histogram_quantile", "abs",
    "ceil", "floor", "round", "and", "or", "unless", "bool", "offset", "inf", "nan",
}
SEVERITIES = {"critical", "warning", "info"}

failures = []


def ok(msg):
    print(f"  ok    {msg}")


def fail(msg):
    print(f"  FAIL  {msg}")
    failures.append(msg)


def check(cond, msg):
    (ok if cond else fail)(msg)
    return cond


def name_of(doc):
    return f"{doc.get('kind')}/{(doc.get('metadata') or {}).get('name')}"


def duration_seconds(text):
    """`20s`, `1m30s`, `500ms` -> seconds (the config's humantime subset used here)."""
    parts = re.findall(r"(\d+)(ms|h|m|s)", str(text))
    if not parts or "".join(n + u for n, u in parts) != str(text):
        raise ValueError(f"not a duration: {text!r}")
    unit = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    return sum(int(n) * unit[u] for n, u in parts)


def validate_schemas(docs, versions):
    print(f"== schemas: core kinds with kubernetes-validate {kubernetes_validate.__version__} (strict) for"
          f" Kubernetes {', '.join(versions)}; CRDs with deploy/validate/crd-schemas.yaml")
    with open(os.path.join(HERE, "crd-schemas.yaml")) as f:
        crd = yaml.safe_load(f)
    for doc, origin in docs:
        kind = doc.get("kind")
        label = f"{name_of(doc)} ({origin})"
        if kind in CORE_KINDS:
            errors = []
            for version in versions:
                try:
                    kubernetes_validate.validate(doc, version, strict=True)
                except kubernetes_validate.ValidationError as e:
                    path = ".".join(str(p) for p in e.path)
                    errors.append(f"Kubernetes {e.version}: {path}: {e.message}")
                except Exception as e:  # schema not found, unsupported version, ...
                    errors.append(f"Kubernetes {version}: {getattr(e, 'message', e)}")
            if errors:
                fail(f"{label}: " + "; ".join(dict.fromkeys(errors)))
            else:
                ok(f"{label}: valid for Kubernetes {versions[0]} .. {versions[-1]}")
        elif kind in CRD_KINDS:
            schema = dict(crd[kind])
            schema["$defs"] = crd["$defs"]
            validator = jsonschema.Draft202012Validator(schema)
            errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.path))
            if errors:
                fail(f"{label}: " + "; ".join(
                    f"{'.'.join(str(p) for p in e.path) or '(root)'}: {e.message}" for e in errors))
            else:
                ok(f"{label}: valid against the {kind} schema")
        else:
            fail(f"{label}: no schema for kind {kind!r} (add one or remove the resource)")


def selector_matches(selector, labels):
    return all(labels.get(k) == v for k, v in (selector or {}).items())


def named(by_kind, kind, name):
    return next((d for d in by_kind.get(kind, []) if d["metadata"].get("name") == name), None)


def size_bytes(text):
    """Kubernetes quantities (`128Mi`, `64M`) and Redis sizes (`64mb`, `1gb`) -> bytes."""
    m = re.fullmatch(r"(\d+)\s*(Ki|Mi|Gi|K|M|G|kb|mb|gb|k|m|g|b)?", str(text))
    if not m:
        raise ValueError(f"not a size: {text!r}")
    unit = {None: 1, "b": 1, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "K": 10**3, "M": 10**6, "G": 10**9,
            "kb": 2**10, "mb": 2**20, "gb": 2**30, "k": 10**3, "m": 10**6, "g": 10**9}
    return int(m.group(1)) * unit[m.group(2)]


def check_hardening(who, pod, container):
    """The security settings and resources docs/operations.md and docs/deployment.md promise, for any of our containers."""
    psc = pod.get("securityContext", {})
    csc = container.get("securityContext", {})
    uid = csc.get("runAsUser", psc.get("runAsUser")) or 0
    check((psc.get("runAsNonRoot") or csc.get("runAsNonRoot")) and uid > 0,
          f"{who}: runs as a non-root numeric user ({uid})")
    check(csc.get("readOnlyRootFilesystem") is True, f"{who}: read-only root filesystem")
    check(csc.get("allowPrivilegeEscalation") is False, f"{who}: allowPrivilegeEscalation false")
    check(csc.get("capabilities", {}).get("drop") == ["ALL"] and not csc.get("capabilities", {}).get("add"),
          f"{who}: drops ALL capabilities, adds none")
    check((csc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type") == "RuntimeDefault",
          f"{who}: seccomp RuntimeDefault")
    check(pod.get("automountServiceAccountToken") is False, f"{who}: no service account token")
    res = container.get("resources", {})
    check(all(k in res.get(s, {}) for s in ("requests", "limits") for k in ("cpu", "memory")),
          f"{who}: cpu and memory requests and limits set")


def walk(node, path=""):
    """(path, value) of every string in a parsed YAML document."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from walk(v, f"{path}.{k}" if path else str(k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from walk(v, f"{path}[{i}]")
    elif isinstance(node, str):
        yield path, node


def placeholder_ok(key, value):
    """An example Secret value: REPLACE_ME, or the in-cluster redis-url, which has no password."""
    if value == "REPLACE_ME":
        return True
    url = urllib.parse.urlsplit(value)
    return key == "redis-url" and url.scheme == "redis" and url.password is None and url.username is None


def check_consistency(by_kind, secret, am_config, base_config_map=None):
    print("== resources fit together")
    dep = named(by_kind, "Deployment", SERVICE)
    svc = named(by_kind, "Service", SERVICE)
    pdb = named(by_kind, "PodDisruptionBudget", SERVICE)
    smon = named(by_kind, "ServiceMonitor", SERVICE)
    cms = {d["metadata"]["name"]: d for d in by_kind["ConfigMap"]}
    spec = dep["spec"]
    pod = spec["template"]["spec"]
    pod_labels = spec["template"]["metadata"].get("labels", {})
    (container,) = pod["containers"]

    check(selector_matches(spec["selector"].get("matchLabels"), pod_labels),
          "Deployment selector matches its pod labels")
    check(selector_matches(svc["spec"].get("selector"), pod_labels) and svc["spec"].get("selector"),
          "Service selector matches the pods")
    check(selector_matches(pdb["spec"]["selector"].get("matchLabels"), pod_labels),
          "PodDisruptionBudget selector matches the pods")
    check(selector_matches(smon["spec"]["selector"].get("matchLabels"), svc["metadata"].get("labels", {})),
          "ServiceMonitor selector matches the Service's labels")
    container_ports = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
    svc_ports = {p.get("name"): p for p in svc["spec"]["ports"]}
    check("http" in svc_ports and svc_ports["http"]["port"] == 9097, "Service has port 9097 named http")
    check(all(p.get("targetPort") in container_ports or p.get("targetPort") in container_ports.values()
              for p in svc_ports.values()), "Service targetPorts name container ports")
    check(all(e.get("port") in svc_ports for e in smon["spec"]["endpoints"])
          and all(e.get("path", "/metrics") == "/metrics" for e in smon["spec"]["endpoints"]),
          "ServiceMonitor scrapes /metrics on a named Service port")

    # Probes
    probes = {k: container.get(k, {}).get("httpGet", {}) for k in ("livenessProbe", "readinessProbe")}
    check(probes["livenessProbe"].get("path") == "/-/healthy"
          and probes["readinessProbe"].get("path") == "/-/ready"
          and all(p.get("port") in container_ports or p.get("port") in container_ports.values()
                  for p in probes.values()),
          "liveness /-/healthy, readiness /-/ready on the container's port")

    # Availability (how many replicas the state allows is checked with config.yml below)
    replicas = spec.get("replicas", 1)
    pdb_spec = pdb["spec"]
    if "minAvailable" in pdb_spec:
        allowed = replicas - int(pdb_spec["minAvailable"])
        keeps = int(pdb_spec["minAvailable"])
    else:
        allowed = int(pdb_spec.get("maxUnavailable", 0))
        keeps = replicas - allowed
    check(allowed >= 1, f"PodDisruptionBudget lets a drain evict one of {replicas} replica(s) "
          f"({'minAvailable ' + str(pdb_spec['minAvailable']) if 'minAvailable' in pdb_spec else 'maxUnavailable ' + str(pdb_spec.get('maxUnavailable'))}: never blocks it)")
    check(replicas == 1 or keeps >= 1, f"PodDisruptionBudget keeps one of {replicas} replicas serving")
    check(any(c.get("topologyKey") == "kubernetes.io/hostname" for c in pod.get("topologySpreadConstraints", []))
          or "podAntiAffinity" in pod.get("affinity", {}),
          "replicas are spread across nodes")

    # Security
    check_hardening("alertmanager-wecom", pod, container)

    # Volumes: the config from a rendered ConfigMap, the secrets from the example Secret's name.
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    mounts = {m["mountPath"]: volumes.get(m["name"], {}) for m in container.get("volumeMounts", [])}
    check(all(m.get("readOnly") for m in container.get("volumeMounts", [])), "every volume is mounted read-only")
    args = container.get("args", [])
    config_path = args[args.index("--config") + 1] if "--config" in args else None
    if not check(config_path is not None, f"container runs with --config {config_path}"):
        return
    config_dir, config_key = os.path.split(config_path)
    cm_name = mounts.get(config_dir, {}).get("configMap", {}).get("name")
    cm = cms.get(cm_name)
    if not check(cm is not None and config_key in cm.get("data", {}),
                 f"{config_path} comes from ConfigMap {cm_name} (key {config_key})"):
        return
    config = yaml.safe_load(cm["data"][config_key])

    secret_values = dict(secret.get("stringData") or {})
    secret_keys = set(secret_values) | set((secret.get("data") or {}).keys())
    check(all(placeholder_ok(k, v) for k, v in secret_values.items()) and not secret.get("data"),
          "secret.example.yaml holds placeholders (REPLACE_ME) only, redis-url without a password")
    secret_dirs = {path for path, vol in mounts.items() if "secret" in vol}

    def secret_file_ok(path, what):
        d, key = os.path.split(path or "")
        vol = mounts.get(d, {}).get("secret", {})
        check(vol.get("secretName") == secret["metadata"]["name"] and key in secret_keys,
              f"{what} {path} is key {key!r} of Secret {vol.get('secretName')} mounted at {d}")

    # config.yml against the Deployment
    listen_port = int(str(config.get("listen", "0.0.0.0:9097")).rsplit(":", 1)[1])
    check(listen_port in container_ports.values(), f"config.yml listen port {listen_port} is the containerPort")
    secret_file_ok(((config.get("server") or {}).get("auth") or {}).get("bearer_token_file"),
                   "server.auth.bearer_token_file")
    for app in config.get("apps", []):
        check("secret" not in app, f"apps[{app.get('name')}] has no inline secret")
        secret_file_ok(app.get("secret_file"), f"apps[{app.get('name')}].secret_file")
    # Every path under a Secret mount anywhere in config.yml (robots, state, ... too).
    referenced = {p: v for p, v in walk(config) if os.path.dirname(v) in secret_dirs}
    missing = sorted(f"{p}: {os.path.basename(v)}" for p, v in referenced.items()
                     if os.path.basename(v) not in secret_keys)
    check(not missing, f"the {len(referenced)} Secret files config.yml reads are keys of the example Secret"
          + (f" (missing: {', '.join(missing)})" if missing else f" ({', '.join(sorted({os.path.basename(v) for v in referenced.values()}))})"))
    env_names = {e.get("name") for e in container.get("env", [])}
    env_refs = {m for _, v in walk(config) for m in re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", v)}
    check(env_refs <= env_names, "every ${VAR} in config.yml is set in the container's env"
          + (f" (unset: {', '.join(sorted(env_refs - env_names))})" if env_refs - env_names else
             f" ({', '.join(sorted(env_refs)) or 'none used'})"))
    routes = config.get("routes", [])
    check(bool(routes) and not routes[-1].get("matchers"), "config.yml ends with a catch-all route")
    tdir = (config.get("templates") or {}).get("dir")
    if tdir is not None:
        tpath = os.path.normpath(os.path.join(config_dir, tdir))
        hbs = {k[:-4] for k in (cms.get(mounts.get(tpath, {}).get("configMap", {}).get("name"), {}).get("data") or {})
               if k.endswith(".hbs")}
        custom = {r["template"] for r in routes if r.get("template")} - {"text", "markdown", "textcard"}
        check(custom <= hbs, f"templates {sorted(custom)} used by routes are in the ConfigMap at {tpath}")
    grace = duration_seconds((config.get("server") or {}).get("shutdown_grace", "20s"))
    pre_stop = ((container.get("lifecycle") or {}).get("preStop") or {}).get("sleep", {}).get("seconds", 0)
    tgps = pod.get("terminationGracePeriodSeconds", 30)
    check(tgps > pre_stop + grace,
          f"terminationGracePeriodSeconds {tgps} > preStop {pre_stop}s + shutdown_grace {grace:g}s")

    # Delivery state: per process with memory, so more than one replica needs a shared store.
    state = config.get("state") or {}
    backend = state.get("backend", "memory")
    check(backend in BACKENDS, f"state.backend {backend!r} is one of {', '.join(sorted(BACKENDS))}")
    if backend == "memory":
        check(replicas == 1, f"{replicas} replica(s) on state.backend memory: one at most (replicas would "
              "keep separate delivery state: duplicates, WeCom rate limits overrun)")
    else:
        ok(f"{replicas} replica(s) share their delivery state (state.backend {backend})")
    redis_url = None
    if backend == "redis":
        has_url, has_file = bool(state.get("url")), bool(state.get("url_file"))
        check(has_url != has_file, "state: exactly one of url and url_file")
        if has_file:
            secret_file_ok(state["url_file"], "state.url_file")
            redis_url = secret_values.get(os.path.basename(state["url_file"]))
        elif has_url:
            inline = urllib.parse.urlsplit(state["url"])
            check("${" in state["url"] or inline.password is None,
                  "state.url has no inline password (use url_file or ${VAR})")
            redis_url = None if "${" in state["url"] else state["url"]
    else:
        check(not (state.get("url") or state.get("url_file")), "state: no Redis URL with backend memory")
    for key in ("connect_timeout", "command_timeout"):
        if key in state:
            duration_seconds(state[key])  # raises on a malformed duration
    if "command_timeout" in state and "delivery_deadline" in (config.get("wecom") or {}):
        check(duration_seconds(state["command_timeout"]) < duration_seconds(config["wecom"]["delivery_deadline"]),
              "state.command_timeout < wecom.delivery_deadline")

    rdep = named(by_kind, "Deployment", REDIS)
    if backend == "redis":
        check(rdep is not None, f"state.backend redis: the variant ships Deployment/{REDIS}")
    else:
        check(rdep is None, f"state.backend {backend}: no Redis shipped that nothing would use")
    if rdep is not None:
        check_redis(by_kind, rdep, dep, svc, pdb, smon, redis_url)

    if base_config_map is not None:
        check_same_config(cm, config_key, base_config_map)

    # alertmanager.yml points at this Service with the token file
    hooks = [w for r in am_config.get("receivers", []) for w in r.get("webhook_configs", [])]
    want = f"http://{svc['metadata']['name']}:{svc_ports['http']['port']}/alerts"
    check(any(w.get("url", "").startswith(f"http://{svc['metadata']['name']}") and
              w.get("url", "").rstrip("/").endswith(f":{svc_ports['http']['port']}/alerts") for w in hooks),
          f"alertmanager.yml sends webhooks to {want} (or the Service's FQDN)")
    check(all(((w.get("http_config") or {}).get("authorization") or {}).get("credentials_file") for w in hooks),
          "alertmanager.yml sends the bearer token from credentials_file")


def check_redis(by_kind, rdep, dep, svc, pdb, smon, redis_url):
    print(f"== the Redis for shared state ({REDIS})")
    rsvc = named(by_kind, "Service", REDIS)
    (netpol,) = by_kind.get("NetworkPolicy", [None])
    rspec = rdep["spec"]
    rpod = rspec["template"]["spec"]
    rlabels = rspec["template"]["metadata"].get("labels", {})
    pod_labels = dep["spec"]["template"]["metadata"].get("labels", {})
    (rc,) = rpod["containers"]
    rports = {p.get("name"): p["containerPort"] for p in rc.get("ports", [])}

    # Selectors: Redis' own match, and the service's and Redis' never select each other's pods.
    check(selector_matches(rspec["selector"].get("matchLabels"), rlabels),
          "Redis Deployment selector matches its pod labels")
    check(bool(rsvc) and rsvc["spec"].get("selector") and selector_matches(rsvc["spec"]["selector"], rlabels),
          f"Service/{REDIS} selector matches the Redis pods")
    spread = [c.get("labelSelector", {}).get("matchLabels")
              for c in dep["spec"]["template"]["spec"].get("topologySpreadConstraints", [])]
    check(not selector_matches(svc["spec"].get("selector"), rlabels)
          and not selector_matches(pdb["spec"]["selector"].get("matchLabels"), rlabels)
          and not any(selector_matches(s, rlabels) for s in spread if s)
          and not selector_matches(dep["spec"]["selector"].get("matchLabels"), rlabels)
          and not selector_matches((rsvc or {}).get("spec", {}).get("selector"), pod_labels),
          "the service's Deployment, Service, PDB and spread constraints select no Redis pod, "
          "nor Redis' Service the service's pods")
    check(not selector_matches(smon["spec"]["selector"].get("matchLabels"), (rsvc or {}).get("metadata", {}).get("labels", {})),
          "the ServiceMonitor does not select Redis' Service")

    # One Redis: two behind the Service would each hold part of the state.
    check(rspec.get("replicas", 1) == 1 and (rspec.get("strategy") or {}).get("type") == "Recreate",
          "one Redis pod, strategy Recreate (never two side by side)")

    # Ports: the redis-server --port, the containerPort, the Service and the Secret's URL agree.
    rargs = rc.get("args", [])
    opts = {a: (rargs[i + 1] if i + 1 < len(rargs) else None) for i, a in enumerate(rargs) if a.startswith("--")}
    port = int(opts.get("--port") or 6379)
    check(port in rports.values(), f"redis-server --port {port} is the containerPort")
    rsvc_ports = (rsvc or {}).get("spec", {}).get("ports", [])
    check(len(rsvc_ports) == 1 and (rsvc_ports[0].get("targetPort") in rports
                                    or rsvc_ports[0].get("targetPort") in rports.values())
          and rports.get(rsvc_ports[0].get("targetPort"), rsvc_ports[0].get("targetPort")) == port,
          f"Service/{REDIS} port {rsvc_ports[0].get('port') if rsvc_ports else None} targets redis-server's port {port}")
    if redis_url is None:
        fail(f"no Redis URL to check against Service/{REDIS}: use state.url_file and a redis-url "
             "key in the example Secret")
    else:
        url = urllib.parse.urlsplit(redis_url)
        host = url.hostname or ""
        check(url.scheme == "redis" and (host == REDIS or host.startswith(REDIS + "."))
              and (url.port or 6379) == (rsvc_ports[0].get("port") if rsvc_ports else None),
              f"the example Secret's redis-url {redis_url} names Service/{REDIS} and its port")

    # Probes: redis-cli ping against that port, or a TCP check on it.
    def probe_ok(probe):
        cmd = (probe.get("exec") or {}).get("command") or []
        if cmd:
            p = cmd[cmd.index("-p") + 1] if "-p" in cmd[:-1] else "6379"
            return os.path.basename(cmd[0]) in ("redis-cli", "valkey-cli") and cmd[-1].lower() == "ping" \
                and int(p) == port
        tcp = (probe.get("tcpSocket") or {}).get("port")
        return tcp is not None and (rports.get(tcp) == port or tcp == port)
    check(all(probe_ok(rc.get(k) or {}) for k in ("livenessProbe", "readinessProbe")),
          f"Redis liveness and readiness probes (redis-cli ping or TCP) on port {port}")

    # No persistence, bounded memory that Redis evicts itself before the OOM killer acts.
    check(opts.get("--save") == "" and opts.get("--appendonly") == "no",
          'no persistence: --save "" --appendonly no')
    limit = ((rc.get("resources") or {}).get("limits") or {}).get("memory")
    maxmemory, policy = opts.get("--maxmemory"), opts.get("--maxmemory-policy")
    check(maxmemory is not None and limit is not None and size_bytes(maxmemory) < size_bytes(limit),
          f"--maxmemory {maxmemory} below the memory limit {limit}")
    check(policy is not None and policy != "noeviction",
          f"--maxmemory-policy {policy} evicts when full (every key has a TTL)")
    rvolumes = {v["name"]: v for v in rpod.get("volumes", [])}
    check(not any("persistentVolumeClaim" in v for v in rvolumes.values())
          and all("emptyDir" in rvolumes.get(m["name"], {}) for m in rc.get("volumeMounts", []) if not m.get("readOnly")),
          "Redis writes only to emptyDir volumes (no PersistentVolumeClaim)")
    image = rc.get("image", "")
    tag = image.rsplit("/", 1)[-1].partition(":")[2]
    check("@sha256:" in image or (tag and tag != "latest"), f"Redis image pinned by tag or digest ({image})")
    check_hardening("Redis", rpod, rc)

    # NetworkPolicy: Redis pods admit only the service's pods, only on the Redis port.
    if not check(netpol is not None and selector_matches(netpol["spec"]["podSelector"].get("matchLabels"), rlabels)
                 and netpol["spec"]["podSelector"].get("matchLabels")
                 and not selector_matches(netpol["spec"]["podSelector"].get("matchLabels"), pod_labels),
                 f"NetworkPolicy/{(netpol or {}).get('metadata', {}).get('name')} selects the Redis pods only"):
        return
    nspec = netpol["spec"]
    rules = nspec.get("ingress", [])
    peers_ok = all(rule.get("from") and all(set(peer) == {"podSelector"}
                                            and selector_matches(peer["podSelector"].get("matchLabels"), pod_labels)
                                            and peer["podSelector"].get("matchLabels")
                                            for peer in rule["from"]) for rule in rules)
    ports_ok = all(rule.get("ports") and all(p.get("protocol", "TCP") == "TCP"
                                             and (p.get("port") == port or rports.get(p.get("port")) == port)
                                             for p in rule["ports"]) for rule in rules)
    check("Ingress" in nspec.get("policyTypes", []) and rules and peers_ok and ports_ok,
          f"NetworkPolicy admits only alertmanager-wecom pods (same namespace), on TCP {port}")


def check_same_config(cm, config_key, base_cm):
    """An overlay's ConfigMap: config.yml as the base's except state:, the other keys unchanged."""
    data, base = cm.get("data") or {}, base_cm.get("data") or {}
    mine = yaml.safe_load(data[config_key]) or {}
    theirs = yaml.safe_load(base.get(config_key, "")) or {}
    differ = sorted(k for k in set(mine) | set(theirs) if k != "state" and mine.get(k) != theirs.get(k))
    check(not differ, f"{config_key} is the base's but for state: "
          f"({(theirs.get('state') or {}).get('backend', 'memory')} -> {(mine.get('state') or {}).get('backend', 'memory')})"
          + (f"; also differs in: {', '.join(differ)}" if differ else ""))
    others = sorted(k for k in set(data) | set(base) if k != config_key and data.get(k) != base.get(k))
    check(not others, "the ConfigMap's other keys (templates) are the base's"
          + (f" (differ: {', '.join(others)})" if others else ""))


def metric_names(expr):
    e = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)
    e = re.sub(r"\{[^}]*\}", "", e)
    e = re.sub(r"\[[^\]]*\]", "", e)
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", e)
    return {t for t in re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", e) if t.lower() not in PROMQL_WORDS}


def check_rules(rule_doc, out_path):
    print("== PrometheusRule content")
    groups = rule_doc["spec"]["groups"]
    alerts = [r for g in groups for r in g["rules"] if "alert" in r]
    names = [r["alert"] for r in alerts]
    check(len(names) == len(set(names)), f"{len(alerts)} alerts with distinct names")
    for r in alerts:
        sev = (r.get("labels") or {}).get("severity")
        ann = r.get("annotations") or {}
        check(sev in SEVERITIES and ann.get("summary") and ann.get("description"),
              f"{r['alert']}: severity={sev}, summary and description")
        unknown = metric_names(str(r["expr"])) - KNOWN_METRICS
        check(not unknown, f"{r['alert']}: queries only known metrics"
              + (f" (unknown: {', '.join(sorted(unknown))})" if unknown else ""))
    with open(out_path, "w") as f:
        yaml.safe_dump({"groups": groups}, f, sort_keys=False, allow_unicode=True)


def main():
    argv = sys.argv[1:]
    base_rendered = None
    if argv[:1] == ["--same-config-as"]:
        base_rendered, argv = argv[1], argv[2:]
    if len(argv) < 5:
        sys.exit(__doc__)
    rendered, secret_path, am_path, rules_out, *versions = argv
    with open(rendered) as f:
        docs = [(d, "kubectl kustomize") for d in yaml.safe_load_all(f) if d]
    with open(secret_path) as f:
        (secret,) = [d for d in yaml.safe_load_all(f) if d]
    with open(am_path) as f:
        am_config = yaml.safe_load(f)
    base_cm = None
    if base_rendered:
        with open(base_rendered) as f:
            (base_cm,) = [d for d in yaml.safe_load_all(f) if d and d.get("kind") == "ConfigMap"]

    print(f"== rendered resources: {', '.join(name_of(d) for d, _ in docs)}")
    kinds = Counter(d.get("kind") for d, _ in docs)
    with_redis = any(d.get("kind") == "Deployment" and d["metadata"].get("name") == REDIS for d, _ in docs)
    want = BASE_KINDS + (REDIS_KINDS if with_redis else Counter())
    check(kinds == want, "the base's " + ", ".join(sorted(BASE_KINDS))
          + (" plus Redis' Deployment, Service, NetworkPolicy" if with_redis else "")
          + ("" if kinds == want else f" (got {dict(kinds)})"))
    names = {(d.get("kind"), d["metadata"].get("name")) for d, _ in docs}
    check(all((k, SERVICE) in names for k in ("Deployment", "Service", "PodDisruptionBudget",
                                               "ServiceMonitor", "PrometheusRule"))
          and (not with_redis or {("Service", REDIS), ("NetworkPolicy", REDIS)} <= names),
          f"named {SERVICE}" + (f" and {REDIS}" if with_redis else ""))
    check(secret.get("kind") == "Secret" and "Secret" not in kinds,
          "the example Secret is not part of the variant (applying it never overwrites the real one)")

    validate_schemas(docs + [(secret, os.path.basename(secret_path))], versions)

    by_kind = {}
    for d, _ in docs:
        by_kind.setdefault(d.get("kind"), []).append(d)
    if kinds == want:
        try:
            check_consistency(by_kind, secret, am_config, base_cm)
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
            fail(f"cannot cross-check the resources: {type(e).__name__}: {e}")
        check_rules(named(by_kind, "PrometheusRule", SERVICE) or by_kind["PrometheusRule"][0], rules_out)

    if failures:
        print(f"{len(failures)} check(s) failed")
        sys.exit(1)


if __name__ == "__main__":
    main()
