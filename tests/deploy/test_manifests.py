"""deploy/: Kubernetes manifests, KEDA object, NATS configs and the Dockerfile, checked offline.

Every kustomization is rendered (tests/deploy/kustomize_lite.py; cross-checked against
`kubectl kustomize` when kubectl exists), every built-in object is validated strictly against
the Kubernetes OpenAPI schema bundled with kubernetes-validate, the KEDA ScaledObject against
deploy/k8s/schema/keda-scaledobject.schema.json, and then the operational promises the
manifests make are asserted one by one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tomllib
from fnmatch import fnmatch

import jsonschema
import kubernetes_validate
import pytest
import yaml

from contracts import subjects
from node.embedded import server_binary

from .support import DEPLOY, PASSWORD_ENV, ROOT
from .kustomize_lite import pod_spec, render

K8S_VERSION = "1.30"  # oldest Kubernetes these manifests promise to work on
K8S = DEPLOY / "k8s"
KUSTOMIZATIONS = {"base": K8S / "base", "production": K8S / "overlays" / "production"}
KEDA_SCHEMA = K8S / "schema" / "keda-scaledobject.schema.json"
REQUEST, JOBS = "strategy-node", "strategy-node-jobs"


@pytest.fixture(scope="module", params=sorted(KUSTOMIZATIONS))
def rendered(request) -> list[dict]:
    return render(str(KUSTOMIZATIONS[request.param]))


@pytest.fixture(scope="module")
def production() -> list[dict]:
    return render(str(KUSTOMIZATIONS["production"]))


def by_kind(resources: list[dict], kind: str) -> list[dict]:
    return [r for r in resources if r["kind"] == kind]


def one(resources: list[dict], kind: str, name: str) -> dict:
    (hit,) = [r for r in by_kind(resources, kind) if r["metadata"]["name"] == name]
    return hit


def container(deployment: dict) -> dict:
    (c,) = pod_spec(deployment)["containers"]
    return c


def config_env(resources: list[dict], deployment: dict) -> dict[str, str]:
    """The environment a Deployment's container gets from ConfigMaps and literal env."""
    env: dict[str, str] = {}
    for source in container(deployment).get("envFrom", []):
        if "configMapRef" in source:
            env.update(one(resources, "ConfigMap", source["configMapRef"]["name"])["data"])
    for item in container(deployment).get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
    return env


def selects(selector: dict, labels: dict) -> bool:
    assert set(selector) <= {"matchLabels"}, "only matchLabels selectors are used here"
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


# --- rendering and schema validation ---------------------------------------------------------


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
@pytest.mark.parametrize("name", sorted(KUSTOMIZATIONS))
def test_renderer_matches_kubectl_kustomize(name):
    out = subprocess.run(
        ["kubectl", "kustomize", str(KUSTOMIZATIONS[name])],
        check=True, capture_output=True, text=True, timeout=60,
    ).stdout
    key = lambda r: (r["kind"], r["metadata"]["name"])  # noqa: E731
    theirs = {key(r): r for r in yaml.safe_load_all(out) if r}
    ours = {key(r): r for r in render(str(KUSTOMIZATIONS[name]))}
    assert ours == theirs


def test_builtin_objects_validate_strictly_against_kubernetes_schema(rendered):
    checked = 0
    for resource in rendered:
        if resource["apiVersion"].startswith("keda.sh/"):
            continue
        try:
            kubernetes_validate.validate(resource, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = ".".join(str(p) for p in exc.path)
            message = f"{resource['kind']}/{resource['metadata']['name']}: {where}: {exc.message}"
            raise AssertionError(message) from None
        checked += 1
    assert checked >= 8


def test_scaled_object_validates_against_keda_schema(rendered):
    schema = json.loads(KEDA_SCHEMA.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    (scaled,) = by_kind(rendered, "ScaledObject")
    jsonschema.Draft202012Validator(schema).validate(scaled)


def test_keda_schema_rejects_misspelt_and_mistyped_fields(rendered):
    # The schema is only worth having if it catches mistakes the API server would ignore.
    validator = jsonschema.Draft202012Validator(json.loads(KEDA_SCHEMA.read_text()))
    (scaled,) = by_kind(rendered, "ScaledObject")
    misspelt = json.loads(json.dumps(scaled))
    misspelt["spec"]["minReplicas"] = misspelt["spec"].pop("minReplicaCount")
    unquoted = json.loads(json.dumps(scaled))
    unquoted["spec"]["triggers"][0]["metadata"]["lagThreshold"] = 10
    no_consumer = json.loads(json.dumps(scaled))
    del no_consumer["spec"]["triggers"][0]["metadata"]["consumer"]
    for bad in (misspelt, unquoted, no_consumer):
        assert not validator.is_valid(bad)


def test_every_resource_is_labelled_part_of_strategy_exec(rendered):
    for resource in rendered:
        if resource["kind"] == "Namespace":
            continue
        assert resource["metadata"]["labels"]["app.kubernetes.io/part-of"] == "strategy-exec"


# --- pods: probes, shutdown, hardening, resources --------------------------------------------


def test_node_accepts_each_deployments_configuration_and_role(rendered):
    # The node's own parser, so a value it would reject at start-up fails here instead.
    from node.config import Settings

    for name, role in ((REQUEST, "requests"), (JOBS, "jobs")):
        env = config_env(rendered, one(rendered, "Deployment", name))
        settings = Settings.from_env(env)
        assert settings.role == role
        assert settings.max_workers == int(env["MAX_WORKERS"])
        assert settings.drain_timeout_seconds == float(env["DRAIN_TIMEOUT_SECONDS"])


def test_deployments_leave_replicas_to_the_autoscalers(rendered):
    for deployment in by_kind(rendered, "Deployment"):
        assert "replicas" not in deployment["spec"], deployment["metadata"]["name"]


def test_probes_use_the_health_command(rendered):
    # Parsed by the CLI's own parser, so a flag it does not know fails here.
    from node.cli import build_parser
    from node.config import Settings

    for deployment in by_kind(rendered, "Deployment"):
        c = container(deployment)
        commands = {probe: c[probe]["exec"]["command"]
                    for probe in ("startupProbe", "livenessProbe", "readinessProbe")}
        for probe, command in commands.items():
            assert command[:2] == ["strategy-node", "health"], probe
        startup, liveness, readiness = (build_parser().parse_args(commands[p][1:])
                                        for p in ("startupProbe", "livenessProbe", "readinessProbe"))
        # Startup and liveness: this pod's heartbeat file, no NATS (an outage must not restart
        # the fleet; a stuck node must not pass on another node's answer).
        assert startup.local and liveness.local and not (startup.ready or liveness.ready)
        assert liveness.max_age >= 5 * 2  # several missed 2 s heartbeats before it fails
        # Readiness: this pod's own node over NATS, strategy.v1.health.<NODE_ID>.
        assert readiness.ready and not readiness.local and readiness.node is None
        node_id = next(e for e in c["env"] if e["name"] == "NODE_ID")
        assert node_id["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
        # The heartbeat is written below a writable mount (the root filesystem is read-only).
        heartbeat = Settings.from_env(config_env(rendered, deployment)).heartbeat_file
        mounts = [m["mountPath"] for m in c["volumeMounts"] if not m.get("readOnly")]
        assert any(heartbeat.startswith(m.rstrip("/") + "/") for m in mounts), heartbeat
        startup_probe = c["startupProbe"]
        assert startup_probe["periodSeconds"] * startup_probe["failureThreshold"] >= 60  # warm-up budget


def test_grace_period_outlasts_prestop_plus_drain(rendered):
    for deployment in by_kind(rendered, "Deployment"):
        env = config_env(rendered, deployment)
        drain = int(env.get("DRAIN_TIMEOUT_SECONDS", "30"))
        prestop = container(deployment)["lifecycle"]["preStop"]["exec"]["command"]
        assert prestop[0] == "sleep"
        grace = pod_spec(deployment)["terminationGracePeriodSeconds"]
        # The grace period starts with preStop, so it must cover the sleep and the whole drain.
        assert grace > int(prestop[1]) + drain, deployment["metadata"]["name"]
        # A run admitted just before SIGTERM may take MAX_TIMEOUT_SECONDS to finish.
        assert drain >= int(env.get("MAX_TIMEOUT_SECONDS", "30"))


def test_pods_run_as_non_root_with_read_only_root_filesystem(rendered):
    for deployment in by_kind(rendered, "Deployment"):
        spec = pod_spec(deployment)
        pod_sc = spec["securityContext"]
        c = container(deployment)
        sc = c["securityContext"]
        assert pod_sc["runAsNonRoot"] and sc["runAsNonRoot"]
        assert pod_sc["runAsUser"] != 0
        assert pod_sc["seccompProfile"] == {"type": "Localhost", "localhostProfile": NODE_SECCOMP_PROFILE.name}
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"] and "add" not in sc["capabilities"]
        # /tmp (HOME and TMPDIR in the image) is the one writable path: an emptyDir.
        volumes = {v["name"]: v for v in spec["volumes"]}
        (tmp,) = [m for m in c["volumeMounts"] if m["mountPath"] == "/tmp"]
        assert "emptyDir" in volumes[tmp["name"]]


# --- the sandbox's layers without root (deploy/k8s/seccomp) ------------------------------------

SECCOMP = K8S / "seccomp"
NODE_SECCOMP_PROFILE = SECCOMP / "strategy-node.json"
RUNTIME_DEFAULT_LIKE = SECCOMP / "runtime-default-like.json"


def _allowed(profile: dict) -> dict[str, list]:
    """syscall -> its rules' argument conditions ([] = unconditional) for every ALLOW rule."""
    allowed: dict[str, list] = {}
    for rule in profile["syscalls"]:
        if rule["action"] == "SCMP_ACT_ALLOW":
            for name in rule["names"]:
                allowed.setdefault(name, []).append(rule.get("args", []))
    return allowed


def test_pods_run_in_a_user_namespace_of_their_own(rendered):
    for deployment in by_kind(rendered, "Deployment"):
        assert pod_spec(deployment)["hostUsers"] is False, deployment["metadata"]["name"]


def test_node_profile_adds_to_runtime_default_only_what_the_zygote_needs():
    from sandbox import namespaces

    node = json.loads(NODE_SECCOMP_PROFILE.read_text())
    base = json.loads(RUNTIME_DEFAULT_LIKE.read_text())
    assert node["defaultAction"] == base["defaultAction"] == "SCMP_ACT_ERRNO"
    ours, theirs = _allowed(node), _allowed(base)
    added = {name: ours[name] for name in ours if ours[name] != theirs.get(name)}
    flags = (namespaces.CLONE_NEWUSER | namespaces.CLONE_NEWNS | namespaces.CLONE_NEWIPC
             | namespaces.CLONE_NEWUTS | namespaces.CLONE_NEWNET)
    assert added == {
        "unshare": [[{"index": 0, "value": flags, "op": "SCMP_CMP_EQ"}]],
        "chroot": [[]], "fsopen": [[]], "fsconfig": [[]], "fsmount": [[]],
    }
    for name in ("unshare", "setns", "mount", "pivot_root", "chroot", "bpf", "keyctl"):
        assert name not in theirs, f"RuntimeDefault-like must not allow {name}"
    # clone never with namespace flags: only the one unshare above creates namespaces
    (clone,) = theirs["clone"]
    assert clone[0]["op"] == "SCMP_CMP_MASKED_EQ" and clone[0]["value"] & namespaces.CLONE_NEWUSER


@pytest.mark.skipif(not __import__("ctypes.util").util.find_library("seccomp"), reason="libseccomp not installed")
def test_seccomp_profiles_are_what_the_generator_writes():
    out = subprocess.run([os.sys.executable, str(SECCOMP / "generate.py"), "--check"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr


def test_readme_names_what_each_layer_needs():
    text = (DEPLOY / "README.md").read_text()
    for needed in ("strategy-node.json", "hostUsers: false", "unshare", "max_user_namespaces",
                   "apparmor_restrict_unprivileged_userns", "/var/lib/kubelet/seccomp"):
        assert needed in text, needed


def test_pods_get_no_service_account_token(rendered):
    (sa,) = by_kind(rendered, "ServiceAccount")
    assert sa["automountServiceAccountToken"] is False
    for deployment in by_kind(rendered, "Deployment"):
        spec = pod_spec(deployment)
        assert spec["serviceAccountName"] == sa["metadata"]["name"]
        assert spec["automountServiceAccountToken"] is False


def test_containers_set_cpu_and_memory_requests_and_limits(rendered):
    for deployment in by_kind(rendered, "Deployment"):
        resources = container(deployment)["resources"]
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(resources[kind]), deployment["metadata"]["name"]


def test_nats_credentials_come_from_a_secret_not_the_configmap(rendered):
    (cm,) = by_kind(rendered, "ConfigMap")
    assert not {"NATS_PASSWORD", "NATS_TOKEN", "NATS_USER"} & set(cm["data"])
    for deployment in by_kind(rendered, "Deployment"):
        sources = container(deployment)["envFrom"]
        refs = [s["secretRef"]["name"] for s in sources if "secretRef" in s]
        assert refs == ["strategy-node-nats"]


# --- autoscaling -----------------------------------------------------------------------------


def test_hpa_scales_request_deployment_on_cpu(rendered):
    (hpa,) = by_kind(rendered, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": REQUEST}
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Resource" and metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"]["type"] == "Utilization"
    assert 2 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]


def test_keda_scales_jobs_deployment_on_strategy_workers_lag(rendered):
    (scaled,) = by_kind(rendered, "ScaledObject")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    assert scaled["spec"]["scaleTargetRef"]["name"] == JOBS
    # durable jobs, then hosted-strategy triggers (node/hosting/triggers.py): the same jobs-role pods run both
    jobs, hosted = scaled["spec"]["triggers"]
    for trigger, (stream, consumer) in ((jobs, ("STRATEGY_JOBS", "strategy-workers")),
                                        (hosted, ("STRATEGY_TRIGGERS", "strategy-triggers"))):
        assert trigger["type"] == "nats-jetstream"
        meta = trigger["metadata"]
        assert meta["stream"] == stream and meta["consumer"] == consumer
        assert meta["account"] == "STRATEGY"
        assert meta["natsServerMonitoringEndpoint"].endswith(":8222")
    assert scaled["spec"]["minReplicaCount"] <= scaled["spec"]["maxReplicaCount"]


def test_no_deployment_is_targeted_by_two_autoscalers(rendered):
    scalers = by_kind(rendered, "HorizontalPodAutoscaler") + by_kind(rendered, "ScaledObject")
    targets = [s["spec"]["scaleTargetRef"]["name"] for s in scalers]
    deployments = {d["metadata"]["name"] for d in by_kind(rendered, "Deployment")}
    assert sorted(targets) == sorted(deployments)


# --- disruption and network ------------------------------------------------------------------


def test_each_deployment_has_exactly_one_pdb_selecting_its_pods(rendered):
    pdbs = by_kind(rendered, "PodDisruptionBudget")
    for deployment in by_kind(rendered, "Deployment"):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        matching = [p for p in pdbs if selects(p["spec"]["selector"], labels)]
        assert len(matching) == 1, deployment["metadata"]["name"]
        # maxUnavailable, so a single replica never blocks a node drain.
        assert matching[0]["spec"].get("maxUnavailable") == 1
    # Selectors of the two Deployments must not overlap (each owns its pods).
    request, jobs = (one(rendered, "Deployment", n) for n in (REQUEST, JOBS))
    assert not selects(request["spec"]["selector"], jobs["spec"]["template"]["metadata"]["labels"])
    assert not selects(jobs["spec"]["selector"], request["spec"]["template"]["metadata"]["labels"])


def test_network_policy_denies_ingress_and_allows_only_nats_and_dns(rendered):
    (policy,) = by_kind(rendered, "NetworkPolicy")
    spec = policy["spec"]
    for deployment in by_kind(rendered, "Deployment"):
        assert selects(spec["podSelector"], deployment["spec"]["template"]["metadata"]["labels"])
    assert sorted(spec["policyTypes"]) == ["Egress", "Ingress"]
    assert not spec.get("ingress")  # Ingress listed with no rules: nothing may connect in
    allowed = set()
    for rule in spec["egress"]:
        assert rule.get("to"), "an egress rule without peers would allow every destination"
        for port in rule["ports"]:
            allowed.add((port["protocol"], port["port"]))
        peers = [p["podSelector"]["matchLabels"] for p in rule["to"]]
        if any(port["port"] == 4222 for port in rule["ports"]):
            assert peers == [{"app": "nats"}]
        else:
            assert peers == [{"k8s-app": "kube-dns"}]
    assert allowed == {("TCP", 4222), ("UDP", 53), ("TCP", 53)}


# --- production overlay ----------------------------------------------------------------------


def test_production_pins_image_and_namespace(production):
    for resource in production:
        if resource["kind"] != "Namespace":
            assert resource["metadata"]["namespace"] == "strategy-exec"
    for deployment in by_kind(production, "Deployment"):
        image = container(deployment)["image"]
        assert re.fullmatch(r"[\w./-]+/strategy-exec-node(:[\w.-]+|@sha256:[0-9a-f]{64})", image)
        assert not image.endswith(":latest") and not image.endswith(":dev")


def test_production_pods_get_guaranteed_qos(production):
    for deployment in by_kind(production, "Deployment"):
        resources = container(deployment)["resources"]
        assert resources["requests"] == resources["limits"]


def test_production_namespace_enforces_restricted_pod_security(production):
    (ns,) = by_kind(production, "Namespace")
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_production_overlay_changes_only_what_it_means_to(production):
    base = render(str(KUSTOMIZATIONS["base"]))
    assert {(r["kind"], r["metadata"]["name"]) for r in production} == {
        (r["kind"], r["metadata"]["name"]) for r in base
    } | {("Namespace", "strategy-exec")}
    hpa = one(production, "HorizontalPodAutoscaler", REQUEST)["spec"]
    scaled = one(production, "ScaledObject", JOBS)["spec"]
    assert hpa["minReplicas"] > one(base, "HorizontalPodAutoscaler", REQUEST)["spec"]["minReplicas"]
    assert scaled["minReplicaCount"] >= 2
    (cm,) = by_kind(production, "ConfigMap")
    assert cm["data"]["ENVIRONMENT"] == "production"
    assert cm["data"]["NATS_URL"] == by_kind(base, "ConfigMap")[0]["data"]["NATS_URL"]


# --- NATS server configs ---------------------------------------------------------------------

NATS_CONFIGS = ["permissions.conf", "cluster/nats-1.conf", "cluster/nats-2.conf",
                "cluster/nats-3.conf"]


def _nats_config_test(path, env) -> subprocess.CompletedProcess:
    return subprocess.run(
        [server_binary(), "-t", "-c", str(path)],
        capture_output=True, text=True, timeout=30, env=env,
    )


@pytest.mark.parametrize("name", NATS_CONFIGS)
def test_nats_config_is_valid(name):
    result = _nats_config_test(DEPLOY / "nats" / name, {**os.environ, **PASSWORD_ENV})
    assert result.returncode == 0, result.stderr


def test_nats_config_refuses_to_load_without_password_environment():
    env = {k: v for k, v in os.environ.items() if k not in PASSWORD_ENV}
    result = _nats_config_test(DEPLOY / "nats" / "permissions.conf", env)
    assert result.returncode != 0
    assert "STRATEGY_NODE_PASSWORD" in result.stderr + result.stdout


def test_nats_cluster_members_differ_only_in_server_name():
    names = []
    for n in (1, 2, 3):
        text = (DEPLOY / "nats" / "cluster" / f"nats-{n}.conf").read_text()
        names.append(re.search(r"^server_name:\s*(\S+)", text, re.M).group(1))
        assert "include ./common.conf" in text
    assert names == ["nats-1", "nats-2", "nats-3"]
    common = (DEPLOY / "nats" / "cluster" / "common.conf").read_text()
    for n in (1, 2, 3):
        assert f"nats-route://nats-{n}:6222" in common
    assert re.search(r"^http:\s*\S+:8222", common, re.M), "KEDA reads lag from port 8222"


def test_manifests_and_nats_permissions_agree_on_names():
    # KEDA account/stream/consumer and the queue group must be the ones the server grants.
    conf = (DEPLOY / "nats" / "permissions.conf").read_text()
    scaled = yaml.safe_load((K8S / "base" / "scaledobject.yaml").read_text())
    for trigger in scaled["spec"]["triggers"]:  # jobs and hosted-strategy triggers
        meta = trigger["metadata"]
        assert re.search(rf"^\s+{meta['account']}:\s*{{", conf, re.M)
        assert f"$JS.API.CONSUMER.MSG.NEXT.{meta['stream']}.{meta['consumer']}" in conf
    assert f'"{subjects.PREFIX}.> {subjects.QUEUE_GROUP}"' in conf
    # Per-node health: any one-token queue (the node uses `health-<node_id>`).
    assert f'"{subjects.HEALTH}.* *"' in conf


# --- container image -------------------------------------------------------------------------


def _dockerfile_stages() -> list[list[tuple[str, str]]]:
    text = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
    stages: list[list[tuple[str, str]]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instr, _, rest = line.partition(" ")
        if instr.upper() == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((instr.upper(), rest.strip()))
    return stages


def test_dockerfile_is_multi_stage_on_python_311_slim():
    text = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim$", text, re.M)
    stages = _dockerfile_stages()
    assert len(stages) >= 2
    assert all(s[0][1].startswith("${PYTHON_IMAGE}") for s in stages)
    build_runs = " ".join(rest for instr, rest in stages[0] if instr == "RUN")
    assert re.search(r"pip install [^&]*\.(\s|$)", build_runs)
    assert any(instr == "COPY" and "--from=build" in rest for instr, rest in stages[-1])


def test_dockerfile_runtime_is_non_root_with_entrypoint_and_thread_limits():
    final = _dockerfile_stages()[-1]
    users = [rest for instr, rest in final if instr == "USER"]
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "numeric non-root uid, so runAsNonRoot can verify it"
    (entrypoint,) = [json.loads(rest) for instr, rest in final if instr == "ENTRYPOINT"]
    assert entrypoint[-2:] == ["strategy-node", "run"]
    env = " ".join(rest for instr, rest in final if instr == "ENV")
    for setting in ("OPENBLAS_NUM_THREADS=1", "OMP_NUM_THREADS=1", "HOME=/tmp", "TMPDIR=/tmp",
                    "PYTHONDONTWRITEBYTECODE=1"):
        assert setting in env


def test_dockerignore_admits_the_package_and_nothing_else():
    patterns = [
        p.strip() for p in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
        if p.strip() and not p.startswith("#")
    ]

    def included(path: str) -> bool:
        # Docker semantics: the last matching pattern wins; "!" re-includes.
        keep = True
        for pattern in patterns:
            negate = pattern.startswith("!")
            pat = pattern.lstrip("!").rstrip("/")
            candidates = (path, path.split("/")[0])
            if any(fnmatch(c, pat) or fnmatch(c, pat.replace("**/", "")) for c in candidates):
                keep = negate
        return keep

    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    for package in packages:
        assert included(package.rstrip("*") + "/__init__.py"), package
    assert included("pyproject.toml")
    for secret_or_junk in (".git/config", "tests/conftest.py", ".venv/bin/python",
                           "deploy/Dockerfile", "node/__pycache__/x.pyc", "bench/out1.json",
                           ".env"):
        assert not included(secret_or_junk), secret_or_junk


def test_each_node_deployment_reads_the_secrets_key_from_a_read_only_secret_mount(rendered):
    for dep in by_kind(rendered, "Deployment"):
        spec = dep["spec"]["template"]["spec"]
        (container,) = [c for c in spec["containers"] if c["name"] == "node"]
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        key_file = env["SECRETS_KEY_FILE"]
        (mount,) = [m for m in container["volumeMounts"] if m["name"] == "secrets-key"]
        assert mount["readOnly"] is True and key_file.startswith(mount["mountPath"] + "/")
        (volume,) = [v for v in spec["volumes"] if v["name"] == "secrets-key"]
        assert volume["secret"]["secretName"] == "strategy-node-secrets-key"
        assert volume["secret"]["optional"] is False
        assert "SECRETS_KEY" not in env  # never the key itself as a plain environment value
