"""What the rendered manifests promise an administrator, checked on every
install: least-privilege RBAC, nothing referenced that is not shipped,
webhooks wired to the server's real endpoints with the agreed policies,
certificates that match the Service, highly-available control plane, an agent
with the host access it needs, Redis with AOF, command lines the real CLI
accepts and environment variables the settings classes know."""

from __future__ import annotations

import importlib
import importlib.util
import ipaddress
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import celpy
import yaml
from celpy.adapter import json_to_cel

from tests.unit.manifests.conftest import MANIFESTS, ROOT, find, find_prefix, rendered

NS = "stickyip-system"
#: Images that are not the stickyip image, and why.
EXTERNAL_IMAGES = {
    # overlays/self-signed only: the CA/serving-pair generator ingress-nginx uses.
    "registry.k8s.io/ingress-nginx/kube-webhook-certgen:v1.4.4",
}
WEBHOOK_PATHS = {"/mutate-pods", "/validate-statefulsets", "/validate-pods"}
OPT_IN = "stickyip.io/fixed-ip"
Objs = list[dict[str, Any]]


def pod_specs(objs: Objs) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(workload, pod spec) of every workload."""
    return [(o, o["spec"]["template"]["spec"]) for o in objs
            if o["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job")]


def containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return list(pod.get("initContainers") or []) + list(pod.get("containers") or [])


def named_container(pod: dict[str, Any], name: str) -> dict[str, Any]:
    (c,) = [c for c in pod["containers"] if c["name"] == name]
    found: dict[str, Any] = c
    return found


def webhooks(objs: Objs) -> list[tuple[str, dict[str, Any]]]:
    return [(o["kind"], w) for o in objs if o["kind"] in (
        "MutatingWebhookConfiguration", "ValidatingWebhookConfiguration")
        for w in o["webhooks"]]


def named(objs: Objs, kind: str) -> set[str]:
    return {o["metadata"]["name"] for o in objs if o["kind"] == kind}


# ------------------------------------------------------------------ RBAC

def test_rbac_has_no_wildcards(install: tuple[str, Objs]) -> None:
    _, objs = install
    roles = [o for o in objs if o["kind"] in ("Role", "ClusterRole")]
    assert roles
    for role in roles:
        for rule in role["rules"]:
            for field in ("verbs", "resources", "apiGroups"):
                assert "*" not in rule.get(field, []), (
                    f"{role['kind']}/{role['metadata']['name']} has {field}: '*'")
            assert not any(r.endswith("/*") for r in rule.get("resources", []))


def test_scheduler_rules_follow_kube_scheduler_and_its_lease_is_namespaced() -> None:
    objs = rendered("default")
    rules = find(objs, "ClusterRole", "stickyip-scheduler")["rules"]

    def granted(group: str, resource: str) -> set[str]:
        return {v for r in rules if group in r["apiGroups"] and resource in r["resources"]
                for v in r["verbs"]}

    assert {"get", "list", "watch", "delete"} <= granted("", "pods")
    assert "create" in granted("", "pods/binding")
    assert "patch" in granted("", "pods/status")
    assert {"get", "list", "watch"} <= granted("", "nodes")
    assert {"create", "patch"} <= granted("", "events")
    assert {"create", "patch"} <= granted("events.k8s.io", "events")
    assert {"get", "list", "watch"} <= granted("apps", "statefulsets")
    assert not any("leases" in r["resources"] for r in rules), "Lease rights must be namespaced"
    role = find(objs, "Role", "stickyip-scheduler-leader-election")
    assert role["metadata"]["namespace"] == NS
    assert role["rules"] == [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                              "verbs": ["get", "create", "update"]}]


def test_agent_and_webhook_only_read_and_write_events() -> None:
    objs = rendered("default")
    for name in ("stickyip-agent", "stickyip-webhook"):
        for rule in find(objs, "ClusterRole", name)["rules"]:
            writes = set(rule["verbs"]) - {"get", "list", "watch"}
            assert not writes or rule["resources"] == ["events"], (name, rule)
    agent = find(objs, "ClusterRole", "stickyip-agent")["rules"]
    reads = {(g, r) for rule in agent for g in rule["apiGroups"] for r in rule["resources"]
             if {"list", "watch"} <= set(rule["verbs"])}
    assert {("", "pods"), ("", "services"), ("discovery.k8s.io", "endpointslices"),
            ("networking.k8s.io", "networkpolicies"), ("", "namespaces")} <= reads


# ------------------------------------------------------------------ references

def test_everything_referenced_is_shipped(install: tuple[str, Objs]) -> None:
    name, objs = install
    accounts = named(objs, "ServiceAccount")
    configmaps = named(objs, "ConfigMap")
    secrets = named(objs, "Secret") | {
        o["spec"]["secretName"] for o in objs if o["kind"] == "Certificate"}
    for _, pod in pod_specs(objs):
        for c in containers(pod):  # a certgen Job creates its Secret
            secrets |= {a.split("=", 1)[1] for a in c.get("args", [])
                        if a.startswith("--secret-name=")}
    for workload, pod in pod_specs(objs):
        what = f"{name}: {workload['kind']}/{workload['metadata']['name']}"
        assert workload["metadata"]["namespace"] == NS, what
        if "serviceAccountName" in pod:
            assert pod["serviceAccountName"] in accounts, what
        for vol in pod.get("volumes") or []:
            if "configMap" in vol:
                assert vol["configMap"]["name"] in configmaps, (what, vol)
            if "secret" in vol:
                assert vol["secret"]["secretName"] in secrets, (what, vol)
        for c in containers(pod):
            for ef in c.get("envFrom") or []:
                assert ef["configMapRef"]["name"] in configmaps, (what, ef)
            mounts = {m["name"] for m in c.get("volumeMounts") or []}
            assert mounts <= {v["name"] for v in pod.get("volumes") or []} | {
                t["metadata"]["name"] for t in workload["spec"].get("volumeClaimTemplates", [])
            }, what
    for b in objs:
        if b["kind"] in ("RoleBinding", "ClusterRoleBinding"):
            assert b["roleRef"]["name"] in named(objs, b["roleRef"]["kind"]), b
            for s in b["subjects"]:
                assert s["kind"] == "ServiceAccount" and s["name"] in accounts, b
                assert s["namespace"] == NS


def test_every_namespaced_object_lives_in_stickyip_system(install: tuple[str, Objs]) -> None:
    _, objs = install
    assert find(objs, "Namespace", NS)
    cluster = {"Namespace", "ClusterRole", "ClusterRoleBinding",
               "MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"}
    for o in objs:
        if o["kind"] not in cluster:
            assert o["metadata"].get("namespace") == NS, o["metadata"]["name"]


def built_image() -> str:
    """The reference `make image` gives the image it builds (name:pyproject version)."""
    return subprocess.run([sys.executable, str(ROOT / "scripts/image/build.py"), "--print-ref"],
                          capture_output=True, text=True, check=True).stdout.strip()


def test_every_container_runs_the_built_image(install: tuple[str, Objs]) -> None:
    _, objs = install
    image = built_image()
    for _, pod in pod_specs(objs):
        for c in containers(pod):
            assert c["image"] == image or c["image"] in EXTERNAL_IMAGES, c["image"]


def test_one_kustomize_edit_retags_every_stickyip_container() -> None:
    k = yaml.safe_load((MANIFESTS / "base" / "kustomization.yaml").read_text())
    name, tag = built_image().rsplit(":", 1)
    assert k["images"] == [{"name": name, "newTag": tag}]
    for path in (MANIFESTS / "base").glob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            for _, pod in pod_specs([doc] if doc else []):
                for c in containers(pod):
                    assert c["image"] == name, f"{path.name}: {c['name']} names a tag"


# ------------------------------------------------------------------ webhooks

def test_webhooks_reach_the_server_endpoints(install: tuple[str, Objs]) -> None:
    _, objs = install
    hooks = webhooks(objs)
    assert {w["clientConfig"]["service"]["path"] for _, w in hooks} == WEBHOOK_PATHS
    dep = find(objs, "Deployment", "stickyip-webhook")
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    args = container["args"]
    port = int(args[args.index("--port") + 1])
    for _, w in hooks:
        ref = w["clientConfig"]["service"]
        assert ref["namespace"] == NS
        svc = find(objs, "Service", ref["name"])
        (sp,) = [p for p in svc["spec"]["ports"] if p["port"] == ref["port"]]
        (cp,) = [p for p in container["ports"] if p["name"] == sp["targetPort"]]
        assert cp["containerPort"] == port
        assert svc["spec"]["selector"].items() <= (
            dep["spec"]["template"]["metadata"]["labels"].items())


def test_server_serves_the_configured_paths() -> None:
    server = importlib.import_module("webhooks.server")
    source = Path(server.__file__).read_text()
    for path in WEBHOOK_PATHS | {"/healthz", "/readyz", "/metrics"}:
        assert f'"{path}"' in source, f"webhooks/server.py does not route {path}"


def test_webhook_policies(install: tuple[str, Objs]) -> None:
    _, objs = install
    for kind, w in webhooks(objs):
        assert w["failurePolicy"] in ("Fail", "Ignore"), w["name"]
        assert w["sideEffects"] == "NoneOnDryRun"
        assert w["timeoutSeconds"] == 5
        assert w["admissionReviewVersions"] == ["v1"]
        (expr,) = w["namespaceSelector"]["matchExpressions"]
        assert expr["key"] == "kubernetes.io/metadata.name" and expr["operator"] == "NotIn"
        assert {"kube-system", NS} <= set(expr["values"])
        assert w["rules"], w["name"]
        resources = {r for rule in w["rules"] for r in rule["resources"]}
        if kind == "MutatingWebhookConfiguration":
            assert resources == {"pods"}
            assert w["objectSelector"] == {"matchLabels": {OPT_IN: "true"}}
            assert w["reinvocationPolicy"] == "IfNeeded"
        elif resources == {"statefulsets"}:
            # objectSelector would see the StatefulSet's labels, not the template's.
            assert "objectSelector" not in w
            assert any("object.spec.template.metadata.labels" in c["expression"]
                       for c in w["matchConditions"])


def test_every_failure_policy_is_explained_in_a_comment() -> None:
    lines = (MANIFESTS / "base" / "webhook-configurations.yaml").read_text().splitlines()
    policies = [i for i, line in enumerate(lines) if line.strip().startswith("failurePolicy:")]
    assert len(policies) == 4
    for i in policies:
        value = lines[i].split(":", 1)[1].strip()
        above = []
        for line in reversed(lines[:i]):
            if not line.strip().startswith("#"):
                break
            above.append(line)
        assert above and any(value in line for line in above), (
            f"failurePolicy {value} at line {i + 1} has no comment saying why")


def _cel(expression: str, obj: dict[str, Any]) -> Any:
    env = celpy.Environment()
    return env.program(env.compile(expression)).evaluate({"object": json_to_cel(obj)})


def test_scale_webhook_sees_only_scale_ups() -> None:
    (expr,) = _conditions(rendered("default"), "statefulsets/scale",
                          "ValidatingWebhookConfiguration")
    env = celpy.Environment()
    prog = env.program(env.compile(expr))

    def scale(old: int, new: int) -> Any:
        return prog.evaluate({"object": json_to_cel({"spec": {"replicas": new}}),
                              "oldObject": json_to_cel({"spec": {"replicas": old}})})

    assert bool(scale(3, 5)) is True
    assert bool(scale(3, 3)) is False
    assert bool(scale(5, 1)) is False


def _conditions(objs: Objs, resource: str, kind: str) -> list[str]:
    return [c["expression"] for k, w in webhooks(objs) if k == kind
            and resource in {r for rule in w["rules"] for r in rule["resources"]}
            for c in w.get("matchConditions") or []]


def test_statefulset_match_condition_selects_opted_in_templates() -> None:
    (expr,) = _conditions(rendered("default"), "statefulsets", "ValidatingWebhookConfiguration")

    def sts(labels: dict[str, str] | None) -> dict[str, Any]:
        meta = {} if labels is None else {"labels": labels}
        return {"metadata": {"name": "x", "labels": {OPT_IN: "true"}},
                "spec": {"template": {"metadata": meta}}}

    assert _cel(expr, sts({OPT_IN: "true", "app": "db"})) is not False
    assert bool(_cel(expr, sts({OPT_IN: "true"})))
    assert not bool(_cel(expr, sts({OPT_IN: "false"})))
    assert not bool(_cel(expr, sts({"app": "db"})))  # only the StatefulSet is labelled
    assert not bool(_cel(expr, sts(None)))           # no labels: skipped, no error


def test_pod_match_conditions_select_statefulset_pods_and_named_addresses() -> None:
    objs = rendered("default")
    (mutate,) = _conditions(objs, "pods", "MutatingWebhookConfiguration")
    (validate,) = _conditions(objs, "pods", "ValidatingWebhookConfiguration")
    owned = {"metadata": {"ownerReferences": [{"kind": "StatefulSet", "name": "db"}]}}
    assert bool(_cel(mutate, owned))
    assert not bool(_cel(mutate, {"metadata": {"ownerReferences": [{"kind": "ReplicaSet"}]}}))
    assert not bool(_cel(mutate, {"metadata": {}}))
    assert bool(_cel(validate, {"metadata": {"annotations": {"stickyip.io/ip": "10.20.0.1"}}}))
    assert not bool(_cel(validate, {"metadata": {"annotations": {"a": "b"}}}))
    assert not bool(_cel(validate, {"metadata": {}}))


# ------------------------------------------------------------------ certificates

def _webhook_tls(objs: Objs) -> tuple[dict[str, Any], dict[str, Any]]:
    dep = find(objs, "Deployment", "stickyip-webhook")
    pod = dep["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/etc/stickyip/tls"]
    (vol,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    return container, vol


def test_cert_manager_certificate_serves_the_webhook_service() -> None:
    objs = rendered("default")
    for o in objs:
        if o["kind"].endswith("WebhookConfiguration"):
            ns, name = o["metadata"]["annotations"]["cert-manager.io/inject-ca-from"].split("/")
            cert = find(objs, "Certificate", name)
            assert cert["metadata"]["namespace"] == ns
    assert {o["metadata"]["name"] for o in objs if o["kind"].endswith("WebhookConfiguration")
            } == {"stickyip"}
    cert = find(objs, "Certificate", "stickyip-webhook")
    assert f"stickyip-webhook.{NS}.svc" in cert["spec"]["dnsNames"]
    issuer = find(objs, "Issuer", cert["spec"]["issuerRef"]["name"])
    ca = find(objs, "Certificate", issuer["spec"]["ca"]["secretName"])
    assert ca["spec"]["isCA"] is True
    container, vol = _webhook_tls(objs)
    assert vol["secret"]["secretName"] == cert["spec"]["secretName"]
    assert "items" not in vol["secret"]  # tls.crt / tls.key as cert-manager writes them
    assert {"/etc/stickyip/tls/tls.crt", "/etc/stickyip/tls/tls.key"} <= set(container["args"])


def test_self_signed_overlay_replaces_cert_manager_with_a_certgen_job() -> None:
    objs = rendered("self-signed")
    assert not [o for o in objs if o["apiVersion"].startswith("cert-manager.io/")]
    for o in objs:
        if o["kind"].endswith("WebhookConfiguration"):
            assert "cert-manager.io/inject-ca-from" not in o["metadata"].get("annotations", {})
    job = find(objs, "Job", "stickyip-certgen")
    pod = job["spec"]["template"]["spec"]
    create, patch = pod["initContainers"][0], pod["containers"][0]
    assert create["args"][0] == "create" and patch["args"][0] == "patch"

    def flag(c: dict[str, Any], name: str) -> str:
        (v,) = [str(a).split("=", 1)[1] for a in c["args"] if str(a).startswith(f"--{name}=")]
        return v

    assert f"stickyip-webhook.{NS}.svc" in flag(create, "host").split(",")
    _, vol = _webhook_tls(objs)
    assert flag(create, "secret-name") == flag(patch, "secret-name") == vol["secret"][
        "secretName"]
    assert flag(patch, "webhook-name") == "stickyip"
    assert {i["key"]: i["path"] for i in vol["secret"]["items"]} == {
        "cert": "tls.crt", "key": "tls.key"}
    # The Job may touch only its Secret and the two configurations.
    cr = find(objs, "ClusterRole", "stickyip-certgen")
    assert all(r.get("resourceNames") == ["stickyip"] for r in cr["rules"])


# ------------------------------------------------------------------ control plane

def _pdb_covers(objs: Objs, workload: dict[str, Any]) -> bool:
    labels = workload["spec"]["template"]["metadata"]["labels"]
    return any(o["kind"] == "PodDisruptionBudget" and o["spec"].get("minAvailable", 0) >= 1
               and o["spec"]["selector"]["matchLabels"].items() <= labels.items()
               for o in objs)


def test_webhook_is_highly_available_and_probed(install: tuple[str, Objs]) -> None:
    _, objs = install
    dep = find(objs, "Deployment", "stickyip-webhook")
    assert dep["spec"]["replicas"] == 2
    assert _pdb_covers(objs, dep)
    pod = dep["spec"]["template"]["spec"]
    (pref,) = pod["affinity"]["podAntiAffinity"][
        "preferredDuringSchedulingIgnoredDuringExecution"]
    assert pref["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert pref["podAffinityTerm"]["labelSelector"]["matchLabels"].items() <= (
        dep["spec"]["template"]["metadata"]["labels"].items())
    (c,) = pod["containers"]
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    for probe in (c["readinessProbe"], c["livenessProbe"]):
        assert probe["httpGet"]["scheme"] == "HTTPS"
        assert probe["httpGet"]["port"] in {p["name"] for p in c["ports"]}


def test_scheduler_is_leader_elected_in_its_namespace(install: tuple[str, Objs]) -> None:
    _, objs = install
    dep = find(objs, "Deployment", "stickyip-scheduler")
    assert dep["spec"]["replicas"] == 2
    assert _pdb_covers(objs, dep)
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in c["env"]}
    assert env["STICKYIP_SCHEDULER_LEASE_NAMESPACE"]["valueFrom"]["fieldRef"][
        "fieldPath"] == "metadata.namespace"
    assert env["STICKYIP_SCHEDULER_IDENTITY"]["valueFrom"]["fieldRef"][
        "fieldPath"] == "metadata.name"
    binding = find(objs, "RoleBinding", "stickyip-scheduler-leader-election")
    assert binding["subjects"][0]["name"] == dep["spec"]["template"]["spec"][
        "serviceAccountName"]


def test_pools_are_applied_from_the_pool_configmap(install: tuple[str, Objs]) -> None:
    _, objs = install
    dep = find(objs, "Deployment", "stickyip-scheduler")
    pod = dep["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    assert init["args"][-4:-1] == ["pool", "apply", "-f"]
    path = Path(init["args"][-1])
    (mount,) = [m for m in init["volumeMounts"] if m["mountPath"] == str(path.parent)]
    (vol,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    cm = find(objs, "ConfigMap", vol["configMap"]["name"])
    assert path.name in cm["data"]
    cli = importlib.import_module("stickyip.cli")
    pools = cli.load_pool_file(cm["data"][path.name])
    assert [p.name for p in pools] == ["default"]


def test_example_statefulset_opts_in_with_addresses_inside_a_pool() -> None:
    docs = [d for d in yaml.safe_load_all(
        (MANIFESTS / "examples" / "statefulset.yaml").read_text()) if d]
    (sts,) = [d for d in docs if d["kind"] == "StatefulSet"]
    tmpl = sts["spec"]["template"]["metadata"]
    assert tmpl["labels"][OPT_IN] == "true"
    ann = tmpl["annotations"]
    assert {"stickyip.io/pool", "stickyip.io/ips", "stickyip.io/retain",
            "stickyip.io/node-failure"} <= set(ann)
    pools = yaml.safe_load((MANIFESTS / "base" / "config" / "pools.yaml").read_text())["pools"]
    (pool,) = [p for p in pools if p["name"] == ann["stickyip.io/pool"]]
    first, last = (ipaddress.ip_address(a) for a in ann["stickyip.io/ips"].split("-"))
    assert int(last) - int(first) + 1 == sts["spec"]["replicas"]
    net = ipaddress.ip_network(pool["cidr"])
    assert first in net and last in net


# ------------------------------------------------------------------ agent

def test_agent_has_the_host_access_it_needs(install: tuple[str, Objs]) -> None:
    _, objs = install
    ds = find(objs, "DaemonSet", "stickyip-agent")
    pod = ds["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True
    assert {"operator": "Exists"} in pod["tolerations"]
    host = {v["name"]: v["hostPath"]["path"] for v in pod["volumes"] if "hostPath" in v}
    agent = named_container(pod, "agent")
    assert agent["securityContext"]["privileged"] is True
    mounted = {host[m["name"]]: m["mountPath"] for m in agent["volumeMounts"]
               if m["name"] in host}
    for path in ("/sys/fs/bpf", "/run/stickyip", "/lib/modules", "/usr/src"):
        assert mounted.get(path) == path, f"agent does not mount host {path}"
    args = agent["args"]
    assert args[args.index("agent"):][:3] == ["agent", "--node", "$(NODE_NAME)"]
    env = {e["name"]: e for e in agent["env"]}
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"


def test_agent_init_container_installs_the_cni_plugin_and_conflist(
        install: tuple[str, Objs]) -> None:
    _, objs = install
    pod = find(objs, "DaemonSet", "stickyip-agent")["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    host = {v["name"]: v["hostPath"]["path"] for v in pod["volumes"] if "hostPath" in v}
    mounts = {m["mountPath"]: m["name"] for m in init["volumeMounts"]}
    script = " ".join(init["args"])
    (cni_bin,) = [p for p, n in mounts.items() if host.get(n) == "/opt/cni/bin"]
    assert "from datapath.cni import install" in script and cni_bin in script.split()
    (net_d,) = [p for p, n in mounts.items() if host.get(n) == "/etc/cni/net.d"]
    assert f"{net_d}/10-stickyip.conflist" in script
    (cm_mount,) = [p for p, n in mounts.items() if n not in host]
    (vol,) = [v for v in pod["volumes"] if v["name"] == mounts[cm_mount]]
    conf = json.loads(find(objs, "ConfigMap", vol["configMap"]["name"])["data"][
        "10-stickyip.conflist"])
    assert conf["cniVersion"] in ("1.0.0", "1.1.0")
    assert conf["plugins"][0]["type"] == "stickyip-cni"
    assert conf["plugins"][0]["socket"] == "/run/stickyip/agent.sock"
    config = importlib.import_module("datapath.config")
    assert config.AgentSettings().socket == conf["plugins"][0]["socket"]


# ------------------------------------------------------------------ Redis

def _redis_url(objs: Objs) -> str:
    url: str = find_prefix(objs, "ConfigMap", "stickyip-config-")["data"]["STICKYIP_REDIS_URL"]
    return url


def _agent_redis_url(objs: Objs) -> str:
    agent = named_container(find(objs, "DaemonSet", "stickyip-agent")["spec"]["template"][
        "spec"], "agent")
    (url,) = [e["value"] for e in agent["env"] if e["name"] == "STICKYIP_REDIS_URL"]
    return str(url)


def test_redis_keeps_an_append_only_file_on_a_volume(install: tuple[str, Objs]) -> None:
    name, objs = install
    sts = find(objs, "StatefulSet", "stickyip-redis")
    assert sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    assert find(objs, "Service", sts["spec"]["serviceName"])["spec"]["clusterIP"] == "None"
    (redis,) = [c for c in sts["spec"]["template"]["spec"]["containers"] if c["name"] == "redis"]
    args = " ".join(redis["args"])
    if name == "sentinel":
        script = find(objs, "ConfigMap", "stickyip-redis-sentinel-scripts")["data"][
            "configure.sh"]
        assert "/data/conf/redis.conf" in args and 'echo "appendonly yes"' in script
    else:
        assert "--appendonly yes" in args


def test_redis_does_not_depend_on_the_cni_it_serves(install: tuple[str, Objs]) -> None:
    """The CNI needs the agent and the agent needs Redis: Redis runs on the host
    network, and the agent finds it without cluster DNS (whose pods need the CNI)."""
    _, objs = install
    pod = find(objs, "StatefulSet", "stickyip-redis")["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True
    agent_pod = find(objs, "DaemonSet", "stickyip-agent")["spec"]["template"]["spec"]
    assert agent_pod["dnsPolicy"] == "Default"
    assert agent_pod.get("enableServiceLinks", True) is True
    store = find(objs, "Service", "stickyip-store")
    assert store["spec"].get("clusterIP") != "None"
    var = store["metadata"]["name"].upper().replace("-", "_")
    url = _agent_redis_url(objs)
    assert f"$({var}_SERVICE_HOST):$({var}_SERVICE_PORT)" in url
    assert ".svc" not in url
    # Everyone else may use DNS, to the same Service.
    assert f"//{store['metadata']['name']}.{NS}.svc:{store['spec']['ports'][0]['port']}/" in (
        _redis_url(objs))


def test_sentinel_urls_lead_to_the_sentinels_and_the_monitored_master() -> None:
    objs = rendered("sentinel")
    connection = importlib.import_module("ipam.connection")
    store = find(objs, "Service", "stickyip-store")
    assert store["spec"]["ports"] == [{"name": "sentinel", "port": 26379,
                                       "targetPort": "sentinel"}]
    target = connection.parse_sentinel_url(_redis_url(objs))
    assert target.hosts == [(f"stickyip-store.{NS}.svc", 26379)]
    agent = connection.parse_sentinel_url(
        _agent_redis_url(objs).replace("$(STICKYIP_STORE_SERVICE_HOST)", "10.96.0.10")
        .replace("$(STICKYIP_STORE_SERVICE_PORT)", "26379"))
    assert agent.hosts == [("10.96.0.10", 26379)] and agent.service == target.service
    sts = find(objs, "StatefulSet", "stickyip-redis")
    assert sts["spec"]["replicas"] == 3
    script = find(objs, "ConfigMap", "stickyip-redis-sentinel-scripts")["data"]["configure.sh"]
    assert f"sentinel monitor {target.service} " in script
    assert _pdb_covers(objs, sts)


# ------------------------------------------------------------------ contracts with the code

def test_command_lines_parse_with_the_real_cli(install: tuple[str, Objs]) -> None:
    cli = importlib.import_module("stickyip.cli")
    modules = {entry[0]: entry[1] for entry in cli.COMPONENTS}
    seen = 0
    for _, pod in pod_specs(install[1]):
        for c in containers(pod):
            if c.get("command") != ["stickyip"]:
                continue
            command = next(a for a in c["args"] if not a.startswith("-"))
            if command in modules:  # a component: its module imports (else a failure)
                importlib.import_module(modules[command])
            parser = cli.build_parser(c["args"])
            parser.parse_args(c["args"])  # SystemExit (a failure) on a bad flag
            seen += 1
    assert seen >= 1


def test_environment_variables_name_real_settings(install: tuple[str, Objs]) -> None:
    classes = []
    for module, name in (("ipam.config", "IpamSettings"), ("plumbing.kube.client", "KubeSettings"),
                         ("webhooks.config", "WebhookSettings"),
                         ("scheduler.config", "SchedulerSettings"),
                         ("datapath.config", "AgentSettings"),
                         ("datapath.feedcli", "FeedSettings"),
                         ("datapath.features.services.config", "ServicesSettings"),
                         ("datapath.features.policy.config", "PolicySettings")):
        classes.append(getattr(importlib.import_module(module), name))
    known = {cls.model_config["env_prefix"].upper() + f.upper()
             for cls in classes for f in cls.model_fields}
    prefixes = {cls.model_config["env_prefix"].upper() for cls in classes}
    names = set()
    for o in install[1]:
        if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("stickyip-config-"):
            names |= set(o["data"])
    referenced: set[str] = set()
    for _, pod in pod_specs(install[1]):
        for c in containers(pod):
            names |= {e["name"] for e in c.get("env") or []}
            for e in c.get("env") or []:
                referenced |= set(re.findall(r"\$\((\w+)\)", str(e.get("value", ""))))
    names -= referenced  # helpers such as NODE_NAME, expanded into other values
    checked = 0
    for env_name in sorted(n for n in names if n.startswith("STICKYIP_")):
        longest = max((p for p in prefixes if env_name.startswith(p)), key=len, default=None)
        assert longest is not None and env_name in known, (
            f"{env_name} is not a setting of any component")
        checked += 1
    assert checked >= 1


def test_no_injected_service_variable_reads_like_a_setting(install: tuple[str, Objs]) -> None:
    """Kubernetes injects NAME_PORT, NAME_SERVICE_HOST, ... for every Service of
    the namespace into pods with service links; for a Service named like a
    component (stickyip-webhook -> STICKYIP_WEBHOOK_PORT=tcp://...) that would
    collide with a setting of a stickyip process in such a pod."""
    _, objs = install
    reads = {"webhook": ("webhooks.config", "WebhookSettings"),
             "scheduler": ("scheduler.config", "SchedulerSettings"),
             "agent": ("datapath.config", "AgentSettings"),
             "feed": ("datapath.feedcli", "FeedSettings")}
    common = [("ipam.config", "IpamSettings"), ("plumbing.kube.client", "KubeSettings")]

    def settings_of(command: str) -> set[str]:
        out = set()
        extra = [reads[command]] if command in reads else []
        if command == "agent":
            extra += [("datapath.features.services.config", "ServicesSettings"),
                      ("datapath.features.policy.config", "PolicySettings")]
        for module, name in [*common, *extra]:
            cls = getattr(importlib.import_module(module), name)
            out |= {cls.model_config["env_prefix"].upper() + f.upper() for f in cls.model_fields}
        return out

    injected = set()
    for svc in (o for o in objs if o["kind"] == "Service"):
        var = svc["metadata"]["name"].upper().replace("-", "_")
        injected |= {f"{var}_SERVICE_HOST", f"{var}_SERVICE_PORT", f"{var}_PORT"}
        for p in svc["spec"]["ports"]:
            proto = p.get("protocol", "TCP")
            injected |= {f"{var}_PORT_{p['port']}_{proto}{suffix}"
                         for suffix in ("", "_PROTO", "_PORT", "_ADDR")}
            if "name" in p:
                injected.add(f"{var}_SERVICE_PORT_{p['name'].upper().replace('-', '_')}")
    assert "STICKYIP_WEBHOOK_PORT" in injected  # the case this guards against exists
    for workload, pod in pod_specs(objs):
        if not pod.get("enableServiceLinks", True):
            continue
        for c in containers(pod):
            if c.get("command") != ["stickyip"]:
                continue
            command = next(a for a in c["args"] if not a.startswith("-"))
            clash = injected & settings_of(command)
            assert not clash, (f"{workload['metadata']['name']}/{c['name']} gets Service "
                               f"variables {sorted(clash)} that are settings")


def test_agent_hooks_name_existing_factories(install: tuple[str, Objs]) -> None:
    """``--hook MODULE:FACTORY`` must name a function of the product (checked in
    the source: importing it would load bcc)."""
    pod = find(install[1], "DaemonSet", "stickyip-agent")["spec"]["template"]["spec"]
    agent = named_container(pod, "agent")
    args = agent["args"]
    hooks = [args[i + 1] for i, a in enumerate(args) if a == "--hook"]
    assert hooks
    for spec in hooks:
        module, _, factory = spec.partition(":")
        found = importlib.util.find_spec(module)
        assert found is not None and found.origin is not None, f"no module {module}"
        assert re.search(rf"^def {factory}\(", Path(found.origin).read_text(), re.M), spec
