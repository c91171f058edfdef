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
   config.yml, grace periods) and keep the security settings the README promises; that
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

# What the rules may query: the service's metrics (README "Metrics", plus the reload gauges
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


def check_consistency(by_kind, secret, am_config):
    print("== resources fit together")
    dep = by_kind["Deployment"][0]
    svc = by_kind["Service"][0]
    pdb = by_kind["PodDisruptionBudget"][0]
    smon = by_kind["ServiceMonitor"][0]
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

    # Availability
    check(spec.get("replicas", 1) >= 2, f"Deployment runs {spec.get('replicas', 1)} replicas (>= 2)")
    check(pdb["spec"].get("minAvailable") == 1, "PodDisruptionBudget minAvailable 1")
    check(any(c.get("topologyKey") == "kubernetes.io/hostname" for c in pod.get("topologySpreadConstraints", []))
          or "podAntiAffinity" in pod.get("affinity", {}),
          "replicas are spread across nodes")

    # Security
    psc = pod.get("securityContext", {})
    csc = container.get("securityContext", {})
    check((psc.get("runAsNonRoot") or csc.get("runAsNonRoot"))
          and (csc.get("runAsUser", psc.get("runAsUser")) or 0) > 0,
          "runs as a non-root numeric user")
    check(csc.get("readOnlyRootFilesystem") is True, "read-only root filesystem")
    check(csc.get("allowPrivilegeEscalation") is False, "allowPrivilegeEscalation false")
    check(csc.get("capabilities", {}).get("drop") == ["ALL"] and not csc.get("capabilities", {}).get("add"),
          "drops ALL capabilities, adds none")
    check((csc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type") == "RuntimeDefault",
          "seccomp RuntimeDefault")
    res = container.get("resources", {})
    check(all(k in res.get(s, {}) for s in ("requests", "limits") for k in ("cpu", "memory")),
          "cpu and memory requests and limits set")

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

    secret_keys = set((secret.get("stringData") or {}).keys()) | set((secret.get("data") or {}).keys())
    check(all(v == "REPLACE_ME" for v in (secret.get("stringData") or {}).values()) and not secret.get("data"),
          "secret.example.yaml holds placeholders (REPLACE_ME) only")

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

    # alertmanager.yml points at this Service with the token file
    hooks = [w for r in am_config.get("receivers", []) for w in r.get("webhook_configs", [])]
    want = f"http://{svc['metadata']['name']}:{svc_ports['http']['port']}/alerts"
    check(any(w.get("url", "").startswith(f"http://{svc['metadata']['name']}") and
              w.get("url", "").rstrip("/").endswith(f":{svc_ports['http']['port']}/alerts") for w in hooks),
          f"alertmanager.yml sends webhooks to {want} (or the Service's FQDN)")
    check(all(((w.get("http_config") or {}).get("authorization") or {}).get("credentials_file") for w in hooks),
          "alertmanager.yml sends the bearer token from credentials_file")


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
    rendered, secret_path, am_path, rules_out, *versions = sys.argv[1:]
    if not versions:
        sys.exit(__doc__)
    with open(rendered) as f:
        docs = [(d, "kubectl kustomize") for d in yaml.safe_load_all(f) if d]
    with open(secret_path) as f:
        (secret,) = [d for d in yaml.safe_load_all(f) if d]
    with open(am_path) as f:
        am_config = yaml.safe_load(f)

    print(f"== rendered resources: {', '.join(name_of(d) for d, _ in docs)}")
    kinds = [d.get("kind") for d, _ in docs]
    check(set(kinds) == EXPECTED_KINDS and len(kinds) == len(EXPECTED_KINDS),
          f"exactly one each of {', '.join(sorted(EXPECTED_KINDS))}")
    check(secret.get("kind") == "Secret" and "Secret" not in kinds,
          "the example Secret is not part of the base (applying it never overwrites the real one)")

    validate_schemas(docs + [(secret, os.path.basename(secret_path))], versions)

    by_kind = {}
    for d, _ in docs:
        by_kind.setdefault(d.get("kind"), []).append(d)
    if all(by_kind.get(k) for k in EXPECTED_KINDS):
        try:
            check_consistency(by_kind, secret, am_config)
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
            fail(f"cannot cross-check the resources: {type(e).__name__}: {e}")
        check_rules(by_kind["PrometheusRule"][0], rules_out)

    if failures:
        print(f"{len(failures)} check(s) failed")
        sys.exit(1)


if __name__ == "__main__":
    main()
