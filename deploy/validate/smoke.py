#!/usr/bin/env python3
"""Runs a built alertmanager-wecom with the config of one rendered kustomize variant; run by
deploy/validate.sh for each variant when ALERTMANAGER_WECOM_BIN is set.

usage: smoke.py BINARY RENDERED.yaml SECRET_EXAMPLE.yaml RULES.yml WORKDIR

Lays the ConfigMap out in WORKDIR the way Kubernetes mounts it (files behind ..data symlinks),
with stand-in Secret files (redis-url: a loopback port nothing listens on), then:
1. `BINARY check --config WORKDIR/config.yml` (the service's own config and template check);
2. serves it in --dry-run on a free loopback port: /-/healthy and /-/ready answer 200, POST
   /alerts without the bearer token is refused (401) and with it accepted (200); with
   state.backend redis that happens while Redis is unreachable, as deliveries must go on;
3. `promtool check metrics` on /metrics, every alertmanager_wecom_* metric the
   PrometheusRule queries is exported, alertmanager_wecom_state_backend_info names the
   configured backend, and alertmanager_wecom_state_degraded is 1 for redis (unreachable)
   and 0 for memory.
Nothing leaves 127.0.0.1. Exits 1 if any check failed.
"""

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from check_manifests import check, failures, metric_names  # noqa: E402

FIXTURE = "src/render/samples/firing-crashloop.json"


def lay_out(rendered, secret_example, workdir):
    secret = next(d for d in yaml.safe_load_all(open(secret_example)) if d)
    docs = [d for d in yaml.safe_load_all(open(rendered)) if d]
    dep = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "alertmanager-wecom")
    pod = dep["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    config_maps = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ConfigMap"}
    replace = {}
    token = "smoke-test-value"  # every key of the Secret; --dry-run sends nothing anyway
    # ... but redis-url, which must parse: a loopback port nobody listens on, so the service
    # runs degraded (on local state), which it must survive.
    stand_in = {"redis-url": f"redis://127.0.0.1:{free_port()}/0"}
    for mount in container["volumeMounts"]:
        vol = volumes[mount["name"]]
        local = os.path.join(workdir, mount["mountPath"].strip("/").replace("/", "_"))
        stamp = os.path.join(local, "..2000_01_01_00_00_00.000000000")
        os.makedirs(stamp)
        os.symlink(os.path.basename(stamp), os.path.join(local, "..data"))
        if "configMap" in vol:
            files = config_maps[vol["configMap"]["name"]]["data"]
        else:
            files = {key: stand_in.get(key, token) for key in secret["stringData"]}
        for key, text in files.items():
            with open(os.path.join(stamp, key), "w") as f:
                f.write(text)
            os.symlink(os.path.join("..data", key), os.path.join(local, key))
        replace[mount["mountPath"]] = local
    args = container["args"]
    config = args[args.index("--config") + 1]
    config_dir = os.path.dirname(config)
    local_config = os.path.join(replace[config_dir], os.path.basename(config))
    real = os.path.realpath(local_config)
    text = open(real).read()
    for path, local in replace.items():
        text = text.replace(path + "/", local + "/")
    os.chmod(real, 0o644)
    with open(real, "w") as f:
        f.write(text)
    return local_config, token, (yaml.safe_load(text).get("state") or {}).get("backend", "memory")


def gauge(metrics, name, labels=None):
    """The value of the sample NAME (with LABELS, e.g. 'backend="redis"', among its labels)."""
    for m in re.finditer(rf"^{name}(?:\{{([^}}]*)\}})? (\S+)$", metrics, re.M):
        if labels is None or labels in (m.group(1) or "").split(","):
            return float(m.group(2))
    return None


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(url, data=None, headers=None):
    req = urllib.request.Request(url, data=data, headers=headers or {}, method="POST" if data else "GET")
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def main():
    binary, rendered, secret_example, rules, workdir = sys.argv[1:]
    config, token, backend = lay_out(rendered, secret_example, workdir)

    print(f"== {binary} check on the ConfigMap's config.yml")
    r = subprocess.run([binary, "check", "--config", config], capture_output=True, text=True)
    check(r.returncode == 0, f"check: {(r.stdout + r.stderr).strip()}")
    if r.returncode != 0:
        sys.exit(1)

    print(f"== serving it (dry-run, 127.0.0.1, state.backend {backend}"
          + (", Redis unreachable)" if backend == "redis" else ")"))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = open(os.path.join(workdir, "server.log"), "w")
    metrics = ""
    proc = subprocess.Popen([binary, "--config", config, "--listen", f"127.0.0.1:{port}", "--dry-run"],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        for _ in range(100):
            try:
                if request(base + "/-/ready")[0] == 200:
                    break
            except OSError:
                pass
            if proc.poll() is not None:
                break
            time.sleep(0.1)
        check(request(base + "/-/healthy")[0] == 200, "GET /-/healthy: 200")
        check(request(base + "/-/ready")[0] == 200, "GET /-/ready: 200")
        body = open(FIXTURE, "rb").read()
        json_type = {"Content-Type": "application/json"}
        status, _ = request(base + "/alerts", body, json_type)
        check(status == 401, f"POST /alerts without the bearer token: {status} (want 401)")
        status, answer = request(base + "/alerts", body, {**json_type, "Authorization": f"Bearer {token}"})
        check(status == 200, f"POST /alerts with the bearer token: {status} {answer.strip()}")
        status, metrics = request(base + "/metrics")
        check(status == 200, "GET /metrics: 200")
        # The failed connection may be noticed a moment after start (connect_timeout).
        want_degraded = 1 if backend == "redis" else 0
        for _ in range(50):
            if gauge(metrics, "alertmanager_wecom_state_degraded") == want_degraded:
                break
            time.sleep(0.1)
            status, metrics = request(base + "/metrics")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()

    r = subprocess.run(["promtool", "check", "metrics"], input=metrics, capture_output=True, text=True)
    check(r.returncode == 0, "promtool check metrics: " + ((r.stdout + r.stderr).strip() or "no problems"))
    check(gauge(metrics, "alertmanager_wecom_state_backend_info", f'backend="{backend}"') == 1,
          f'alertmanager_wecom_state_backend_info{{backend="{backend}"}} 1')
    degraded = gauge(metrics, "alertmanager_wecom_state_degraded")
    check(degraded == want_degraded, f"alertmanager_wecom_state_degraded {degraded if degraded is None else f'{degraded:g}'}"
          f" (want {want_degraded}"
          + (": Redis unreachable, on local state)" if backend == "redis" else ")"))
    exported = set(re.findall(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)", metrics, re.M))
    used = set()
    for group in yaml.safe_load(open(rules))["groups"]:
        for rule in group["rules"]:
            used |= metric_names(str(rule["expr"]))
    used = {m for m in used if m.startswith("alertmanager_wecom_")}
    missing = sorted(used - exported)
    check(not missing, f"the {len(used)} alertmanager_wecom_* metrics the rules query are exported"
          + (f" (missing: {', '.join(missing)})" if missing else ""))

    if failures:
        print(f"{len(failures)} check(s) failed; server log: {os.path.join(workdir, 'server.log')}")
        print(open(os.path.join(workdir, "server.log")).read()[-3000:])
        sys.exit(1)


if __name__ == "__main__":
    main()
