#!/usr/bin/env python3
"""Renders charts/weir with `helm template` in several configurations and asserts facts about
the objects, then checks that bad values are refused.

Usage: assert_rendered.py HELM OUT_DIR WEIR

WEIR is the weir binary: the ClusterRole expected is derived from its kind table
(`weir kinds`).

Each case below names its `--set` flags next to what it expects. The rendered YAML of each case
is left in OUT_DIR/<case>.yaml for further checks (run.sh parses it with kubectl). Every
failed assertion is printed with its case; the exit status is 1 if any failed.

Needs PyYAML, jsonschema and kubernetes-validate (run.sh installs them when missing).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import kubernetes_validate
import yaml

CHART = Path(__file__).resolve().parent.parent / "weir"
# The vendored Gateway API CRDs of each channel (crds.channel).
CRD_DIRS = {
    channel: CHART / "files" / "crds" / f"gateway-api-v1.6.1-{channel}" for channel in ("standard", "experimental")
}
NAMESPACE = "weir-system"
# Built-in kinds are validated against this Kubernetes version's OpenAPI schemas (the
# workspace builds k8s-openapi with feature v1_33).
KUBE_VERSION = "1.33"

Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

# The contract with the weir binary: every flag the chart passes, in order. "ADDRESSING"
# stands for the addressMode's flags: --gateway-service (shared), or --gateway-port-range and
# --gateway-pod-selector (perGateway).
ARG_FLAGS = [
    "admin-addr",
    "status-addr",
    "listener-port-offset",
    "gateway-class-controller",
    "ADDRESSING",
    "leader-election-namespace",
    "leader-election-id",
    "lease-duration",
    "drain-timeout",
    "max-connections",
    "log-format",
    "log-level",
    "access-log",
    "access-log-sample",
]

GATEWAY_GROUP = "gateway.networking.k8s.io"
# (apiGroup, resource) -> verbs: the whole ClusterRole, nothing more, nothing less. Filled by
# main() from weir's kind table (see cluster_rules).
CLUSTER_RULES: dict[tuple[str, str], set[str]] = {}


def cluster_rules(weir: str) -> dict[tuple[str, str], set[str]]:
    """The ClusterRole weir needs, from its kind table (`weir kinds`): read every kind it
    reads, and patch the status of those whose status it writes. A kind added to the table
    is expected here without a change."""
    out = subprocess.run([weir, "kinds"], check=True, capture_output=True, text=True).stdout
    rules: dict[tuple[str, str], set[str]] = {}
    for kind in json.loads(out):
        rules[(kind["group"], kind["plural"])] = {"get", "list", "watch"}
        if kind["status"] != "None":
            rules[(kind["group"], f"{kind['plural']}/status")] = {"patch", "update"}
    return rules


# perGateway: the leader creates, updates and deletes one Service per Gateway.
SERVICE_WRITES = {"create", "update", "patch", "delete"}
ROLE_RULES = {("coordination.k8s.io", "leases"): {"get", "create", "update", "patch"}}

# The kinds of each channel's CRDs (Gateway API v1.6.1: TCPRoute and UDPRoute are standard).
STANDARD_KINDS = {
    "GatewayClass",
    "Gateway",
    "HTTPRoute",
    "GRPCRoute",
    "ReferenceGrant",
    "TLSRoute",
    "TCPRoute",
    "UDPRoute",
    "ListenerSet",
    "BackendTLSPolicy",
}
EXPERIMENTAL_ONLY_KINDS = {"XBackend", "XBackendTrafficPolicy", "XMesh"}
CHANNEL_KINDS = {"standard": STANDARD_KINDS, "experimental": STANDARD_KINDS | EXPERIMENTAL_ONLY_KINDS}

DEFAULTS = {
    "release": "weir",
    "fullname": "weir",
    "workload": "Deployment",
    "replicas": 2,
    "offset": 8000,
    "controller": "weir.dev/gateway-controller",
    "class": "weir",
    "lease_id": "weir-leader",
    "log_format": "json",
    "service_monitor": False,
    "crds": False,
    "policy_crds": True,
    "class_hook": False,
    "mode": "perGateway",
    "port_range": "20000-29999",
    "params": None,
    "network_policy": False,
}

# name -> (helm --set values or raw --flags, expectations that differ from DEFAULTS)
CASES: dict[str, tuple[list[str], dict]] = {
    "default": ([], {}),
    "daemonset": (["kind=DaemonSet"], {"workload": "DaemonSet"}),
    "rl-replicas": (["rateLimit.replicas=5"], {"rate_limit_replicas": 5}),
    "rl-replicas-shared": (["addressMode=shared", "rateLimit.replicas=5"],
                           {"mode": "shared", "rate_limit_replicas": 5}),
    "redis-ca": (["rateLimit.redis.caSecret=redis-tls"],
                 {"redis_ca_secret": "redis-tls"}),
    "servicemonitor": (["serviceMonitor.enabled=true"], {"service_monitor": True}),
    "offset0": (["addressMode=shared", "listenerPortOffset=0"], {"offset": 0, "mode": "shared"}),
    "shared": (["addressMode=shared"], {"mode": "shared"}),
    "shared-daemonset": (["addressMode=shared", "kind=DaemonSet"], {"mode": "shared", "workload": "DaemonSet"}),
    "low-range": (["gatewayPortRange=500-600"], {"port_range": "500-600"}),
    "netpol": (["networkPolicy.enabled=true", "networkPolicy.adminFrom[0].namespaceSelector.matchLabels.team=monitoring"],
               {"network_policy": True}),
    "netpol-shared": (["addressMode=shared", "networkPolicy.enabled=true"], {"network_policy": True, "mode": "shared"}),
    "params": (
        [
            "gatewayClass.parameters.create=true",
            "gatewayClass.parameters.serviceType=NodePort",
            "gatewayClass.parameters.serviceAnnotations.cloud\\.example/lb=internal",
            "gatewayClass.parameters.serviceLabels.tier=edge",
        ],
        {"params": {"serviceType": "NodePort", "serviceAnnotations": {"cloud.example/lb": "internal"},
                    "serviceLabels": {"tier": "edge"}}},
    ),
    # Parameters are for perGateway Services: shared mode renders none.
    "params-shared": (["addressMode=shared", "gatewayClass.parameters.create=true"], {"mode": "shared"}),
    "no-policy-crds": (["crds.policies=false"], {"policy_crds": False}),
    # No API server: helm template sees no GatewayClass API, as on a cluster without the CRDs.
    "crds": (["crds.install=true"], {"crds": "standard", "class_hook": True}),
    "crds-experimental": (["crds.install=true", "crds.channel=experimental"],
                          {"crds": "experimental", "class_hook": True}),
    # The channel alone renders nothing: crds.install decides.
    "crds-channel-only": (["crds.channel=experimental"], {}),
    # The CRDs are already served (an upgrade): the GatewayClass is an ordinary object.
    "crds-upgrade": (["crds.install=true", "--api-versions=gateway.networking.k8s.io/v1/GatewayClass"],
                     {"crds": "standard"}),
    "custom": (
        [
            "controllerName=example.com/edge",
            "gatewayClass.name=edge",
            "leaderElection.id=edge-leader",
            "log.format=text",
            "replicaCount=3",
            "accessLog.enabled=false",
            "accessLog.sample=0.25",
            "tracing.otlpEndpoint=http://otel-collector.observability:4318",
            "tracing.protocol=http",
            "tracing.sample=0.1",
            "sessionPersistence.keySecret=edge-session-key",
            "securityPolicy.jwksCAConfigMap=idp-ca",
            "rateLimit.redis.urlSecret=edge-redis",
            "rateLimit.timeout=50ms",
            "rateLimit.failClosed=true",
        ],
        {
            "release": "edge",
            "fullname": "edge-weir",
            "replicas": 3,
            "controller": "example.com/edge",
            "class": "edge",
            "lease_id": "edge-leader",
            "log_format": "text",
            "access_log": "off",
            "access_log_sample": "0.25",
            "tracing": ["--otlp-endpoint=http://otel-collector.observability:4318",
                        "--otlp-protocol=http", "--trace-sample=0.1"],
            "session_key_secret": "edge-session-key",
            "jwks_ca_config_map": "idp-ca",
            "rate_limit": ["--rate-limit-timeout=50ms", "--rate-limit-fail-closed"],
            "redis_secret": "edge-redis",
        },
    ),
}

# Values the chart must refuse: (--set flags, a fragment of the expected error).
BAD_VALUES = [
    (["kind=StatefulSet"], "kind"),
    (["crds.install=true", "crds.channel=beta"], "channel"),
    (["log.format=xml"], "format"),
    (["accessLog.sample=1.5"], "sample"),
    (["accessLog.sample=0"], "sample"),
    (["tracing.protocol=udp"], "protocol"),
    (["tracing.sample=1.5"], "sample"),
    (["tracing.otlpEndpoint=https://collector:4317"], "otlpEndpoint"),
    (["sessionPersistence.keySecret=Not_A_Name"], "keySecret"),
    (["securityPolicy.jwksCAConfigMap=Not_A_Name"], "jwksCAConfigMap"),
    (["rateLimit.redis.url=http://redis:6379"], "url"),
    (["rateLimit.timeout=20"], "timeout"),
    (["rateLimit.replicas=-1"], "replicas"),
    (["rateLimit.redis.caSecret=Not_A_Name"], "caSecret"),
    (["drainTimeout=5"], "drainTimeout"),
    (["drainTimeout=1m"], "must be longer than drainTimeout"),
    (["addressMode=shared", "listenerPortOffset=65500"], "above 65535"),
    (["addressMode=shared", "service.ports[0].name=web", "service.ports[0].port=80",
      "service.ports[1].name=web", "service.ports[1].port=81"], "used twice"),
    (["addressMode=shared", "service.ports[0].name=admin", "service.ports[0].port=80"], "taken by the admin port"),
    (["addressMode=shared", "admin.port=8080"], "already uses"),
    (["addressMode=both"], "addressMode"),
    (["gatewayPortRange=20000"], "gatewayPortRange"),
    (["gatewayPortRange=30000-20000"], "need 1 <= LOW <= HIGH"),
    (["gatewayPortRange=0-10"], "need 1 <= LOW <= HIGH"),
    (["admin.port=20001"], "inside gatewayPortRange"),
    (["gatewayClass.parameters.serviceType=Headless"], "serviceType"),
    (["serviceAccount.create=false"], "serviceAccount.name is required"),
    (["controllerName=no-slash"], "controllerName"),
    (["replicas=2"], "replicas"),
]


class Checker:
    def __init__(self) -> None:
        self.failures: list[str] = []
        self.passed = 0
        self.case = ""

    def check(self, ok: bool, what: str) -> bool:
        if ok:
            self.passed += 1
        else:
            self.failures.append(f"[{self.case}] {what}")
            print(f"FAIL [{self.case}] {what}")
        return ok

    def equal(self, got, want, what: str) -> bool:
        return self.check(got == want, f"{what}: got {got!r}, want {want!r}")


def helm_template(helm: str, release: str, sets: list[str]) -> subprocess.CompletedProcess:
    cmd = [helm, "template", release, str(CHART), "--namespace", NAMESPACE]
    for s in sets:
        cmd += [s] if s.startswith("--") else ["--set", s]
    return subprocess.run(cmd, capture_output=True, text=True, check=False)


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d.get("kind") == kind]


def one(c: Checker, docs: list[dict], kind: str) -> dict | None:
    found = by_kind(docs, kind)
    if c.equal(len(found), 1, f"number of {kind} objects"):
        return found[0]
    return None


def memory_bytes(quantity):
    """A Kubernetes memory quantity (128Mi, 1G, 500000) in bytes."""
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
    m = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(quantity))
    if not m or (m.group(2) and m.group(2) not in units):
        return 0
    return int(float(m.group(1)) * units.get(m.group(2), 1))


def duration_seconds(text: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    parts = re.findall(r"([0-9.]+)(ms|s|m|h)", text)
    return sum(float(n) * units[u] for n, u in parts)


def rules_map(c: Checker, role: dict) -> dict[tuple[str, str], set[str]]:
    """Flattens a Role's rules to (group, resource) -> verbs, failing on wildcards."""
    out: dict[tuple[str, str], set[str]] = {}
    for rule in role.get("rules") or []:
        c.check("nonResourceURLs" not in rule, f"{role['kind']} has nonResourceURLs: {rule}")
        for field in ("apiGroups", "resources", "verbs"):
            c.check("*" not in (rule.get(field) or []), f"{role['kind']} wildcard in {field}: {rule}")
        for group in rule.get("apiGroups") or []:
            for resource in rule.get("resources") or []:
                out.setdefault((group, resource), set()).update(rule.get("verbs") or [])
    return out


def check_rbac(c: Checker, docs: list[dict], sa_name: str, exp: dict) -> None:
    per_gateway = exp["mode"] == "perGateway"
    want_rules = dict(CLUSTER_RULES)
    if per_gateway:
        want_rules[("", "services")] = CLUSTER_RULES[("", "services")] | SERVICE_WRITES
    cluster_role = one(c, docs, "ClusterRole")
    if cluster_role:
        got = rules_map(c, cluster_role)
        for key in sorted(set(got) | set(want_rules)):
            c.equal(got.get(key, set()), want_rules.get(key, set()), f"ClusterRole verbs on {key}")
        for (group, resource), verbs in got.items():
            if resource.endswith("/status"):
                c.check(verbs <= {"patch", "update"}, f"ClusterRole {resource}: {verbs} beyond patch/update")
            elif per_gateway and (group, resource) == ("", "services"):
                c.check(verbs <= {"get", "list", "watch"} | SERVICE_WRITES,
                        f"ClusterRole services: {verbs} beyond read and Service writes")
            else:
                c.check(verbs <= {"get", "list", "watch"}, f"ClusterRole {resource}: {verbs} beyond read")
    role = one(c, docs, "Role")
    if role:
        c.equal(role["metadata"].get("namespace"), NAMESPACE, "Role namespace")
        c.equal(rules_map(c, role), ROLE_RULES, "Role rules")
    for r in by_kind(docs, "ClusterRole") + by_kind(docs, "Role"):
        for (group, resource), verbs in rules_map(c, r).items():
            writes = verbs & {"create", "delete", "deletecollection", "escalate", "bind", "impersonate"}
            if writes:
                c.check(
                    ((group, resource) == ("coordination.k8s.io", "leases") and writes == {"create"})
                    or (per_gateway and r["kind"] == "ClusterRole" and (group, resource) == ("", "services")
                        and writes == {"create", "delete"}),
                    f"{r['kind']} {r['metadata']['name']} may {sorted(writes)} {group}/{resource}",
                )
    for kind, ref_kind, ref in (
        ("ClusterRoleBinding", "ClusterRole", cluster_role),
        ("RoleBinding", "Role", role),
    ):
        binding = one(c, docs, kind)
        if binding and ref:
            c.equal(binding["roleRef"], {
                "apiGroup": "rbac.authorization.k8s.io", "kind": ref_kind, "name": ref["metadata"]["name"]
            }, f"{kind} roleRef")
            c.equal(binding["subjects"], [{"kind": "ServiceAccount", "name": sa_name, "namespace": NAMESPACE}],
                    f"{kind} subjects")


def check_pod(c: Checker, exp: dict, workload: dict, sa_name: str, service: dict | None) -> None:
    template = workload["spec"]["template"]
    pod = template["spec"]
    labels = template["metadata"].get("labels", {})
    selector = workload["spec"]["selector"]["matchLabels"]
    c.check(selector.items() <= labels.items(), f"selector {selector} does not match pod labels {labels}")
    if service:
        sel = service["spec"]["selector"]
        c.check(sel.items() <= labels.items(), f"Service selector {sel} does not match pod labels {labels}")

    ann = template["metadata"].get("annotations", {})
    c.equal(
        {k: ann.get(k) for k in ("prometheus.io/scrape", "prometheus.io/port", "prometheus.io/path")},
        {"prometheus.io/scrape": "true", "prometheus.io/port": "9901", "prometheus.io/path": "/metrics"},
        "pod Prometheus annotations",
    )
    c.equal(pod.get("serviceAccountName"), sa_name, "pod serviceAccountName")

    psc = pod.get("securityContext", {})
    c.equal(psc.get("runAsNonRoot"), True, "pod runAsNonRoot")
    c.equal((psc.get("runAsUser"), psc.get("runAsGroup")), (65532, 65532), "pod runAsUser/runAsGroup")
    c.equal(psc.get("seccompProfile"), {"type": "RuntimeDefault"}, "pod seccompProfile")

    containers = pod.get("containers", [])
    if not c.equal(len(containers), 1, "number of containers"):
        return
    ctr = containers[0]
    app_version = yaml.load((CHART / "Chart.yaml").read_text(), Loader=Loader)["appVersion"]
    c.equal(ctr.get("image"), f"ghcr.io/weir-dev/weir:{app_version}", "image")

    sc = ctr.get("securityContext", {})
    c.equal(sc.get("runAsNonRoot"), True, "container runAsNonRoot")
    c.equal(sc.get("readOnlyRootFilesystem"), True, "container readOnlyRootFilesystem")
    c.equal(sc.get("allowPrivilegeEscalation"), False, "container allowPrivilegeEscalation")
    caps = sc.get("capabilities", {})
    c.equal(caps.get("drop"), ["ALL"], "capabilities.drop")
    shared = exp["mode"] == "shared"
    lowest = exp["offset"] + 80 if shared else int(exp["port_range"].split("-")[0])
    low = lowest < 1024
    sysctls = {s["name"]: s["value"] for s in psc.get("sysctls", [])}
    if low:
        c.equal(caps.get("add"), ["NET_BIND_SERVICE"], "capabilities.add with a port below 1024")
        c.equal(sysctls.get("net.ipv4.ip_unprivileged_port_start"), str(lowest),
                "sysctl ip_unprivileged_port_start with a port below 1024")
    else:
        c.check("add" not in caps, f"capabilities.add {caps.get('add')} with no port below 1024")
        c.equal(sysctls, {}, "pod sysctls with no port below 1024")

    ports = {p["name"]: p["containerPort"] for p in ctr.get("ports", [])}
    want_ports = {"admin": 9901}
    if shared:
        want_ports.update({"http": 80 + exp["offset"], "https": 443 + exp["offset"]})
    c.equal(ports, want_ports, "containerPorts")

    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = (ctr.get(probe) or {}).get("httpGet", {})
        c.equal(get.get("path"), path, f"{probe} path")
        port = get.get("port")
        c.equal(ports.get(port, port), 9901, f"{probe} port ({port!r}) resolves to the admin port")

    fullname = exp["fullname"]
    addressing = [f"--gateway-service={NAMESPACE}/{fullname}"] if shared else [
        f"--gateway-port-range={exp['port_range']}",
        f"--gateway-pod-selector=app.kubernetes.io/name=weir,app.kubernetes.io/instance={exp['release']}",
    ]
    want_args = ["run"] + [f"--{f}={v}" for f, v in zip(ARG_FLAGS, [
        "0.0.0.0:9901",
        "127.0.0.1:9902",
        exp["offset"],
        exp["controller"],
        "ADDRESSING",
        NAMESPACE,
        exp["lease_id"],
        "15s",
        "5s",
        12000,
        exp["log_format"],
        "info",
        exp.get("access_log", "on"),
        exp.get("access_log_sample", "1"),
    ])]
    # Tracing flags only with tracing.otlpEndpoint (off by default: nothing rendered).
    want_args += exp.get("tracing", [])
    # The session key only with sessionPersistence.keySecret: the Secret mounted, the flag on it.
    secret = exp.get("session_key_secret")
    if secret:
        want_args.append("--session-key-file=/etc/weir/session/key")
    # Global rate limits: the timeout always, fail-closed only when asked for.
    want_args += exp.get("rate_limit", ["--rate-limit-timeout=20ms"])
    # Local limits split across the replicas: in shared mode no flag (Weir counts the ready
    # Pods behind --gateway-service); else replicaCount for a Deployment, 1 for a DaemonSet;
    # rateLimit.replicas wins in both.
    split = exp.get("rate_limit_replicas")
    if split is None and not shared:
        split = exp["replicas"] if exp["workload"] == "Deployment" else 1
    if split is not None:
        want_args.append(f"--rate-limit-replicas={split}")
    redis_ca = exp.get("redis_ca_secret")
    if redis_ca:
        want_args.append("--rate-limit-redis-ca=/etc/weir/redis-ca/ca.crt")
    # The remote JWKS CAs only with securityPolicy.jwksCAConfigMap: mounted, the flag on it.
    jwks_ca = exp.get("jwks_ca_config_map")
    if jwks_ca:
        want_args.append("--jwks-ca=/etc/weir/jwks-ca/ca.crt")
    mounts = {m["mountPath"]: m["name"] for m in ctr.get("volumeMounts", [])}
    volumes = {v["name"]: v.get("secret", {}).get("secretName") for v in pod.get("volumes", [])}
    if secret:
        c.equal(mounts.get("/etc/weir/session"), "session-key", "session key mount")
        c.equal(volumes.get("session-key"), secret, "session key Secret")
    else:
        c.check("session-key" not in volumes, f"no session key volume without the value: {volumes}")
    if redis_ca:
        c.equal(mounts.get("/etc/weir/redis-ca"), "redis-ca", "redis CA mount")
        c.equal(volumes.get("redis-ca"), redis_ca, "redis CA Secret")
    else:
        c.check("redis-ca" not in volumes, f"no redis CA volume without the value: {volumes}")
    config_maps = {v["name"]: v.get("configMap", {}).get("name") for v in pod.get("volumes", [])}
    if jwks_ca:
        c.equal(mounts.get("/etc/weir/jwks-ca"), "jwks-ca", "JWKS CA mount")
        c.equal(config_maps.get("jwks-ca"), jwks_ca, "JWKS CA ConfigMap")
    else:
        c.check("jwks-ca" not in config_maps, f"no JWKS CA volume without the value: {config_maps}")
    i = want_args.index("--ADDRESSING=ADDRESSING")
    want_args[i:i + 1] = addressing
    c.equal(ctr.get("args"), want_args, "container args")
    # The --gateway-pod-selector must select these pods.
    for a in ctr.get("args", []):
        if a.startswith("--gateway-pod-selector="):
            pairs = dict(kv.split("=", 1) for kv in a.split("=", 1)[1].split(","))
            c.check(pairs.items() <= labels.items(), f"--gateway-pod-selector {pairs} does not match pod labels {labels}")
    c.check(not ctr.get("command"), f"container command overrides the image entrypoint: {ctr.get('command')}")

    env = {e["name"]: e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") for e in ctr.get("env", [])}
    want_env = {"POD_NAME": "metadata.name", "POD_NAMESPACE": "metadata.namespace", "POD_IP": "status.podIP",
                "WEIR_ZONE": "metadata.labels['topology.kubernetes.io/zone']"}
    # --rate-limit-redis from the Secret's `url` entry, only with rateLimit.redis.urlSecret.
    redis_secret = exp.get("redis_secret")
    if redis_secret:
        want_env["WEIR_RATE_LIMIT_REDIS"] = None
        ref = next((e["valueFrom"]["secretKeyRef"] for e in ctr.get("env", [])
                    if e["name"] == "WEIR_RATE_LIMIT_REDIS"), {})
        c.equal(ref, {"name": redis_secret, "key": "url"}, "redis URL Secret")
    c.equal(env, want_env, "env from the downward API")

    res = ctr.get("resources", {})
    c.check(bool(res.get("requests", {}).get("cpu")) and bool(res.get("requests", {}).get("memory")),
            f"resources.requests cpu and memory: {res}")
    c.check(bool(res.get("limits", {}).get("memory")), f"resources.limits.memory: {res}")
    # The memory limit holds --max-connections idle HTTPS keep-alive clients (30 KB each,
    # bench/keepalive_mem.py) plus 150 MB for two snapshots of 10,000 routes and the rest.
    limit = memory_bytes(res.get("limits", {}).get("memory", "0"))
    conns = next((int(a.split("=", 1)[1]) for a in ctr.get("args", []) if a.startswith("--max-connections=")), 0)
    c.check(conns > 0 and limit >= conns * 30_000 + 150_000_000,
            f"resources.limits.memory {limit} bytes must hold --max-connections {conns} × 30 KB + 150 MB")

    grace = pod.get("terminationGracePeriodSeconds")
    drain = next((a.split("=", 1)[1] for a in ctr.get("args", []) if a.startswith("--drain-timeout=")), "0s")
    c.check(isinstance(grace, int) and grace > duration_seconds(drain),
            f"terminationGracePeriodSeconds {grace!r} must exceed --drain-timeout {drain}")


POLICY_CRD_DIR = CHART / "files" / "crds" / "weir"
POLICY_KINDS = {"ClientTrafficPolicy", "BackendTrafficPolicy", "SecurityPolicy", "ExtensionPolicy"}


def check_policy_crds(c: Checker, docs: list[dict], want: bool) -> None:
    """Weir's own CRDs (gateway.weir.dev): rendered unless crds.policies=false, verbatim
    from files/crds/weir but for the keep annotation."""
    crds = [d for d in by_kind(docs, "CustomResourceDefinition") if d["spec"]["group"] == "gateway.weir.dev"]
    if not want:
        c.equal(crds, [], "policy CRDs with crds.policies=false")
        return
    c.equal({d["spec"]["names"]["kind"] for d in crds}, POLICY_KINDS, "policy CRD kinds")
    ours = {}
    for path in sorted(POLICY_CRD_DIR.glob("*.yaml")):
        doc = yaml.load(path.read_text(), Loader=Loader)
        ours[doc["metadata"]["name"]] = doc
    for d in crds:
        name = d["metadata"]["name"]
        ann = dict(d["metadata"].get("annotations", {}))
        c.equal(ann.pop("helm.sh/resource-policy", None), "keep", f"CRD {name} keep policy")
        d = {**d, "metadata": {**d["metadata"], "annotations": ann}}
        c.check(d == ours.get(name), f"CRD {name} differs from files/crds/weir")


def check_crds(c: Checker, docs: list[dict], channel: str | bool) -> None:
    """The Gateway API CRDs: none without crds.install, else exactly the kinds of the chosen
    channel, each verbatim from files/crds/gateway-api-v1.6.1-<channel> but for the keep
    annotation."""
    crds = [d for d in by_kind(docs, "CustomResourceDefinition") if d["spec"]["group"] != "gateway.weir.dev"]
    if not channel:
        c.equal(crds, [], "CRDs without crds.install")
        return
    kinds = {d["spec"]["names"]["kind"] for d in crds}
    c.equal(kinds, CHANNEL_KINDS[channel], f"CRD kinds (Gateway API {channel} channel)")
    c.equal(len(crds), len(kinds), "one CRD per kind")
    upstream = {}
    for path in sorted(CRD_DIRS[channel].glob("*.yaml")):
        doc = yaml.load(path.read_text(), Loader=Loader)
        upstream[doc["metadata"]["name"]] = doc
    for d in crds:
        name = d["metadata"]["name"]
        ann = dict(d["metadata"].get("annotations", {}))
        c.equal(ann.pop("helm.sh/resource-policy", None), "keep", f"CRD {name} keep policy")
        c.equal(ann.get("gateway.networking.k8s.io/channel"), channel, f"CRD {name} channel")
        c.equal(ann.get("gateway.networking.k8s.io/bundle-version"), "v1.6.1", f"CRD {name} bundle-version")
        d = {**d, "metadata": {**d["metadata"], "annotations": ann}}
        c.check(d == upstream.get(name), f"CRD {name} differs from the vendored upstream file")
    # What Weir reads must be served: TCPRoute at v1 (the version Weir watches) in both
    # channels, v1alpha2 only in the experimental one.
    tcp = next((d for d in crds if d["spec"]["names"]["kind"] == "TCPRoute"), None)
    if tcp is not None:
        served = {v["name"] for v in tcp["spec"]["versions"] if v.get("served")}
        c.equal(served, {"v1"} if channel == "standard" else {"v1", "v1alpha2"}, "TCPRoute served versions")


def check_gatewayclass(c: Checker, exp: dict, docs: list[dict]) -> None:
    gc = one(c, docs, "GatewayClass")
    if not gc:
        return
    c.equal(gc["metadata"]["name"], exp["class"], "GatewayClass name")
    c.equal(gc["spec"].get("controllerName"), exp["controller"], "GatewayClass controllerName")
    configmaps = by_kind(docs, "ConfigMap")
    if exp["params"] is None:
        c.equal(gc["spec"].get("parametersRef"), None, "GatewayClass parametersRef without parameters.create")
        c.equal(configmaps, [], "ConfigMaps without gatewayClass.parameters.create")
    else:
        name = f"{exp['fullname']}-gatewayclass"
        c.equal(gc["spec"].get("parametersRef"),
                {"group": "", "kind": "ConfigMap", "name": name, "namespace": NAMESPACE},
                "GatewayClass parametersRef")
        if c.equal([m["metadata"]["name"] for m in configmaps], [name], "the parameters ConfigMap"):
            data = configmaps[0]["data"]
            c.equal(set(data), {"serviceType", "serviceAnnotations", "serviceLabels"}, "parameters keys (what Weir reads)")
            c.equal(data.get("serviceType"), exp["params"]["serviceType"], "parameters serviceType")
            for key in ("serviceAnnotations", "serviceLabels"):
                c.equal(yaml.safe_load(data.get(key, "")), exp["params"][key], f"parameters {key} (a YAML map)")
    ann = gc["metadata"].get("annotations", {})
    if exp["class_hook"]:
        c.equal(ann.get("helm.sh/hook"), "post-install,post-upgrade", "GatewayClass hook (CRDs in this release)")
        c.equal((ann.get("meta.helm.sh/release-name"), ann.get("meta.helm.sh/release-namespace")),
                (exp["release"], NAMESPACE), "GatewayClass hook ownership metadata (for adoption on upgrade)")
        c.equal(gc["metadata"]["labels"].get("app.kubernetes.io/managed-by"), "Helm", "GatewayClass managed-by")
    else:
        c.equal(ann.get("helm.sh/hook"), None, "GatewayClass hook when the API is served or the CRDs are not ours")
    # Validate against the vendored CRD's v1 schema (API servers check the same one).
    crd = yaml.load((CRD_DIRS["standard"] / "gateway.networking.k8s.io_gatewayclasses.yaml").read_text(), Loader=Loader)
    schema = next(v["schema"]["openAPIV3Schema"] for v in crd["spec"]["versions"] if v["name"] == "v1")
    errors = [e.message for e in jsonschema.Draft7Validator(schema).iter_errors(gc)]
    c.equal(errors, [], "GatewayClass against its CRD schema")


def check_service_monitor(c: Checker, exp: dict, docs: list[dict], lb: dict | None) -> None:
    monitors = by_kind(docs, "ServiceMonitor")
    if not exp["service_monitor"]:
        c.equal(monitors, [], "ServiceMonitor without serviceMonitor.enabled")
        c.equal(len(by_kind(docs, "Service")), 1 if exp["mode"] == "shared" else 0,
                "Services without serviceMonitor.enabled (perGateway: Weir makes them)")
        return
    sm = one(c, docs, "ServiceMonitor")
    if not sm:
        return
    c.equal(sm["apiVersion"], "monitoring.coreos.com/v1", "ServiceMonitor apiVersion")
    c.equal(sm["spec"]["namespaceSelector"], {"matchNames": [NAMESPACE]}, "ServiceMonitor namespaceSelector")
    endpoints = sm["spec"].get("endpoints", [])
    c.equal([(e.get("port"), e.get("path")) for e in endpoints], [("admin", "/metrics")], "ServiceMonitor endpoints")
    sel = sm["spec"]["selector"]["matchLabels"]
    matched = [s for s in by_kind(docs, "Service") if sel.items() <= s["metadata"].get("labels", {}).items()]
    c.equal([s["metadata"]["name"] for s in matched], [f"{exp['fullname']}-admin"], "Services the ServiceMonitor selects")
    if matched:
        svc = matched[0]
        c.equal(svc["spec"]["type"], "ClusterIP", "admin Service type")
        c.equal([(p["name"], p["port"], p["targetPort"]) for p in svc["spec"]["ports"]], [("admin", 9901, "admin")],
                "admin Service ports")
    if lb:
        c.check(lb not in matched, "the LoadBalancer Service must not be scraped")


def check_network_policy(c: Checker, exp: dict, docs: list[dict], workload: dict | None) -> None:
    policies = by_kind(docs, "NetworkPolicy")
    if not c.equal(len(policies), 1 if exp["network_policy"] else 0, "NetworkPolicies"):
        return
    if not policies or workload is None:
        return
    spec = policies[0]["spec"]
    c.equal(spec["podSelector"]["matchLabels"], workload["spec"]["selector"]["matchLabels"],
            "NetworkPolicy selects the Weir pods")
    rules = spec.get("ingress", [])
    traffic = [(p.get("port"), p.get("endPort")) for p in rules[0].get("ports", [])] if rules else []
    if exp["mode"] == "shared":
        want = [(80 + exp["offset"], None), (443 + exp["offset"], None)]
    else:
        low, high = (int(x) for x in exp["port_range"].split("-"))
        want = [(low, high)]
    c.equal(traffic, want, "NetworkPolicy: Gateway traffic on the listener pod ports, from anywhere")
    c.check(rules and "from" not in rules[0], "NetworkPolicy: Gateway traffic from anywhere")
    admin_rules = [r for r in rules[1:] if any(p.get("port") == 9901 for p in r.get("ports", []))]
    for r in admin_rules:
        c.check(bool(r.get("from")), "NetworkPolicy: the admin port only from adminFrom peers")
    c.check(all(p.get("port") != 9902 for r in rules for p in r.get("ports", [])),
            "NetworkPolicy never opens the loopback status port")


def schema_validate(c: Checker, docs: list[dict]) -> None:
    for d in docs:
        what = f"{d.get('kind')} {d.get('metadata', {}).get('name')}"
        try:
            kubernetes_validate.validate(d, KUBE_VERSION, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            c.check(d.get("kind") in {"GatewayClass", "ServiceMonitor"}, f"no Kubernetes schema for {what}")
        except kubernetes_validate.ValidationError as e:
            c.check(False, f"{what} against the Kubernetes {KUBE_VERSION} schema: {e.message}")


def run_case(c: Checker, helm: str, out_dir: Path, name: str, sets: list[str], overrides: dict) -> None:
    c.case = name
    exp = {**DEFAULTS, **overrides}
    result = helm_template(helm, exp["release"], sets)
    if not c.check(result.returncode == 0, f"helm template {' '.join(sets)} failed:\n{result.stderr}"):
        return
    (out_dir / f"{name}.yaml").write_text(result.stdout)
    docs = [d for d in yaml.load_all(result.stdout, Loader=Loader) if d]

    keys = [(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]) for d in docs]
    c.equal(sorted(k for k in set(keys) if keys.count(k) > 1), [], "duplicate objects")
    cluster_scoped = {"ClusterRole", "ClusterRoleBinding", "GatewayClass", "CustomResourceDefinition"}
    for kind, ns, obj in keys:
        c.equal(ns, None if kind in cluster_scoped else NAMESPACE, f"namespace of {kind} {obj}")

    schema_validate(c, docs)

    sa = one(c, docs, "ServiceAccount")
    sa_name = sa["metadata"]["name"] if sa else exp["fullname"]
    check_rbac(c, docs, sa_name, exp)

    deployments, daemonsets = by_kind(docs, "Deployment"), by_kind(docs, "DaemonSet")
    if exp["workload"] == "Deployment":
        c.equal(len(daemonsets), 0, "DaemonSets when kind=Deployment")
        if c.equal(len(deployments), 1, "Deployments"):
            c.equal(deployments[0]["spec"].get("replicas"), exp["replicas"], "Deployment replicas")
    else:
        c.equal(len(deployments), 0, "Deployments when kind=DaemonSet")
        c.equal(len(daemonsets), 1, "DaemonSets")
    workloads = deployments + daemonsets

    lbs = [s for s in by_kind(docs, "Service") if s["spec"].get("type") == "LoadBalancer"]
    want_lbs = 1 if exp["mode"] == "shared" else 0
    lb = lbs[0] if c.equal(len(lbs), want_lbs, "LoadBalancer Services") and lbs else None
    if lb:
        c.equal(lb["metadata"]["name"], exp["fullname"], "LoadBalancer Service name (--gateway-service)")
        c.equal(
            [(p["name"], p["port"], p["targetPort"], p.get("protocol")) for p in lb["spec"]["ports"]],
            [("http", 80, 80 + exp["offset"], "TCP"), ("https", 443, 443 + exp["offset"], "TCP")],
            "LoadBalancer Service ports (port -> port + listenerPortOffset)",
        )
    if workloads:
        check_pod(c, exp, workloads[0], sa_name, lb)

    pdb = one(c, docs, "PodDisruptionBudget")
    if pdb and workloads:
        c.equal(pdb["spec"].get("minAvailable"), 1, "PDB minAvailable")
        c.equal(pdb["spec"]["selector"]["matchLabels"], workloads[0]["spec"]["selector"]["matchLabels"],
                "PDB selector")

    check_gatewayclass(c, exp, docs)
    check_network_policy(c, exp, docs, workloads[0] if workloads else None)
    check_service_monitor(c, exp, docs, lb)
    check_crds(c, docs, exp["crds"])
    check_policy_crds(c, docs, exp["policy_crds"])


def main() -> int:
    if len(sys.argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    helm, out_dir, weir = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    CLUSTER_RULES.update(cluster_rules(weir))
    out_dir.mkdir(parents=True, exist_ok=True)
    c = Checker()
    for name, (sets, overrides) in CASES.items():
        before = len(c.failures)
        run_case(c, helm, out_dir, name, sets, overrides)
        print(f"{'ok  ' if len(c.failures) == before else 'FAIL'} render {name} {' '.join(sets)}")
    c.case = "bad values"
    for sets, fragment in BAD_VALUES:
        result = helm_template(helm, "weir", sets)
        refused = result.returncode != 0 and fragment in result.stderr
        c.check(refused, f"helm template --set {' '.join(sets)} should fail mentioning {fragment!r}; "
                         f"exit {result.returncode}, stderr: {result.stderr.strip()[:300]}")
        print(f"{'ok  ' if refused else 'FAIL'} refuse {' '.join(sets)}")
    print(f"assertions: {c.passed} passed, {len(c.failures)} failed")
    return 1 if c.failures else 0


if __name__ == "__main__":
    sys.exit(main())
