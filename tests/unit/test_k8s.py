"""deploy/k8s/: every manifest parses and validates, and the references between them hold.

No cluster is needed: built-in kinds are validated against Kubernetes' own schemas
(kubernetes-validate), and the cross-references a typo would silently break
(labels, Secrets, ConfigMaps, claims, KEDA targets, queue names) are checked here.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from bench.compose_local import (
    ENV_EXAMPLE,
    load_compose,
    read_env_file,
    redis_config_value,
    settings_from_env,
    shell_redis_server,
)
from tests.support.k8s import (
    K8S,
    MANIFESTS,
    Manifest,
    config,
    containers,
    env_of,
    name_of,
    of_kind,
    pod_specs,
    queues_of,
    workers,
)
from workers.app import PRIORITIES, PRIORITY_STEPS, create_app, queue_lists
from workers.settings import STAGES, Settings

NAMESPACE = "modelfleet"
IMAGE_UID = 10001  # deploy/Dockerfile's USER
# Applied by hand, not by `kubectl apply -k`: the Secret template and the one-shot Job.
NOT_IN_KUSTOMIZATION = {"secret.example.yaml", "producer-job.yaml"}
# Created by the team from its own spec files (producer-job.yaml's header says how).
SPECS_CONFIGMAP = "modelfleet-specs"
# The example queue of big models (`resources: {queue: train-large}`), as in compose.
LARGE_QUEUE = "train-large"


# --- each manifest on its own ---------------------------------------------------------------
@pytest.mark.parametrize("source,manifest", MANIFESTS,
                         ids=[f"{f}:{m['kind']}/{name_of(m)}"
                              for f, m in MANIFESTS])
def test_manifest_is_valid_kubernetes(source: str, manifest: Manifest) -> None:
    if manifest["apiVersion"].startswith("keda.sh/"):
        assert manifest["kind"] in ("ScaledObject", "TriggerAuthentication")
        return  # a CRD: no schema ships with kubernetes-validate; checked by the tests below
    kubernetes_validate.validate(manifest, kubernetes_validate.latest_version(), strict=True)
    if manifest["kind"] != "Namespace":
        assert manifest["metadata"]["namespace"] == NAMESPACE, source


def test_validation_is_not_vacuous() -> None:
    broken = yaml.safe_load(yaml.safe_dump(next(iter(workers().values()))))
    broken["spec"]["template"]["spec"]["terminationGracePeriodSecond"] = 1
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, kubernetes_validate.latest_version(), strict=True)


def test_names_are_unique_per_kind() -> None:
    seen = [(m["kind"], name_of(m)) for _, m in MANIFESTS]
    assert len(seen) == len(set(seen))
    assert NAMESPACE in of_kind("Namespace")


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files - NOT_IN_KUSTOMIZATION
    images = {i["name"] for i in kustomization["images"]}
    assert {c["image"].split(":")[0] for _, _, c in containers() if "modelfleet" in c["image"]} == images


# --- references between manifests ---------------------------------------------------------
def test_selectors_match_their_pod_templates() -> None:
    for name, workload in {**of_kind("Deployment"), **of_kind("StatefulSet")}.items():
        selector = workload["spec"]["selector"]["matchLabels"]
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= labels.items(), name
    # No two workloads' selectors overlap (a pod would count for both).
    selectors = [frozenset(w["spec"]["selector"]["matchLabels"].items())
                 for w in {**of_kind("Deployment"), **of_kind("StatefulSet")}.values()]
    assert len(selectors) == len(set(selectors))


def test_services_select_existing_pods_on_existing_ports() -> None:
    for name, service in of_kind("Service").items():
        selector = service["spec"]["selector"]
        matching = [t for _, t in pod_specs() if selector.items() <= t["metadata"]["labels"].items()]
        assert len(matching) == 1, f"service {name} selects {len(matching)} pod templates"
        ports = {p.get("name") for c in matching[0]["spec"]["containers"] for p in c["ports"]}
        ports |= {p["containerPort"] for c in matching[0]["spec"]["containers"] for p in c["ports"]}
        assert all(p["targetPort"] in ports for p in service["spec"]["ports"]), name


def test_secret_configmap_and_claim_references_resolve() -> None:
    secrets, config_maps = of_kind("Secret"), of_kind("ConfigMap")
    claims = set(of_kind("PersistentVolumeClaim"))
    for name, spec, container in containers():
        for var in container.get("env", []):
            ref = var.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                assert ref["key"] in secrets[ref["name"]]["stringData"], (name, var["name"])
        for source in container.get("envFrom", []):
            assert source["configMapRef"]["name"] in config_maps, name
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        templates = {t["metadata"]["name"] for w in of_kind("StatefulSet").values()
                     for t in w["spec"].get("volumeClaimTemplates", [])}
        for mount in container.get("volumeMounts", []):
            assert mount["name"] in volumes or mount["name"] in templates, (name, mount["name"])
        for volume in volumes.values():
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims, name
            if "configMap" in volume:
                assert volume["configMap"]["name"] in {*config_maps, SPECS_CONFIGMAP}, name


def test_dependent_env_vars_are_defined_before_use() -> None:
    for name, _, container in containers():
        defined = {k for s in container.get("envFrom", [])
                   for k in of_kind("ConfigMap")[s["configMapRef"]["name"]]["data"]}
        for var in container.get("env", []):
            for used in re.findall(r"\$\((\w+)\)", var.get("value", "")):
                assert used in defined, (name, var["name"], used)
            defined.add(var["name"])
        for arg in container.get("command", []) + container.get("args", []):
            for used in re.findall(r"\$\((\w+)\)", arg):
                assert used in defined, (name, arg)


def test_secret_template_holds_placeholders_only() -> None:
    (secret,) = of_kind("Secret").values()
    passwords = {k: v for k, v in secret["stringData"].items() if "password" in k}
    assert passwords and all(v.startswith("change-me") for v in passwords.values())


# --- the app's side -------------------------------------------------------------------------
def test_every_app_container_gets_broker_and_artifact_root() -> None:
    redis_service = of_kind("Service")["modelfleet-redis"]
    port = redis_service["spec"]["ports"][0]["port"]
    password = of_kind("Secret")["modelfleet-secrets"]["stringData"]["redis-password"]
    for name, spec, container in containers():
        if not container["image"].startswith("modelfleet"):
            continue
        settings = settings_from_env(env_of(container))
        assert settings.broker() == f"redis://:{password}@modelfleet-redis:{port}/0", name
        assert settings.artifact_root == Path("/var/lib/modelfleet/artifacts")
        mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
        if name != "modelfleet-flower":  # Flower reads no artifacts
            claim = {v["name"]: v for v in spec["volumes"]}[mounts[str(settings.artifact_root)]]
            assert claim["persistentVolumeClaim"]["claimName"] == "modelfleet-artifacts"
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] == IMAGE_UID


def test_artifact_claim_is_read_write_many() -> None:
    assert of_kind("PersistentVolumeClaim")["modelfleet-artifacts"]["spec"]["accessModes"] == [
        "ReadWriteMany"]


def test_worker_queues_are_the_apps_queues() -> None:
    app = create_app(Settings(broker_url="redis://localhost:6379/0"))  # type: ignore[arg-type]
    routed = {route["queue"] for route in app.conf.task_routes.values()}
    declared = {q.name for q in app.conf.task_queues}
    per_deployment = [queues_of(d) for d in workers().values()]
    assert all(len(q) == 1 for q in per_deployment), "one Deployment per stage queue"
    assert sorted(q[0] for q in per_deployment) == sorted([*STAGES, LARGE_QUEUE])
    assert set(STAGES) == routed == declared


def test_each_worker_has_a_keda_scaler_on_its_queue_list() -> None:
    scaled = of_kind("ScaledObject")
    auths = of_kind("TriggerAuthentication")
    secrets = of_kind("Secret")
    redis_service = of_kind("Service")["modelfleet-redis"]
    redis_address = (f"{redis_service['metadata']['name']}.{NAMESPACE}.svc.cluster.local:"
                     f"{redis_service['spec']['ports'][0]['port']}")
    targets = {s["spec"]["scaleTargetRef"]["name"] for s in scaled.values()}
    assert targets == set(workers()), "exactly one ScaledObject per worker Deployment"
    for name, obj in scaled.items():
        spec = obj["spec"]
        deployment = of_kind("Deployment")[spec["scaleTargetRef"]["name"]]
        assert "replicas" not in deployment["spec"], "KEDA's HPA owns replicas"
        (queue,) = queues_of(deployment)
        # The big machines may scale to zero; every stage pool keeps a warm worker.
        assert spec["minReplicaCount"] >= (0 if queue == LARGE_QUEUE else 1), name
        assert spec["maxReplicaCount"] >= max(1, spec["minReplicaCount"])
        # One trigger per priority list the app sends to: a backlog of any priority scales.
        lists = [lst for lst, step in zip(queue_lists(queue), PRIORITY_STEPS, strict=True)
                 if step in PRIORITIES.values()]
        assert [t["metadata"]["listName"] for t in spec["triggers"]] == lists, name
        # ... and KEDA scales on their sum, the queue's whole backlog (an HPA over the
        # triggers alone takes the largest one: 8 normal + 8 low would get the workers of 8)
        modifier = spec["advanced"]["scalingModifiers"]
        names = [t["name"] for t in spec["triggers"]]
        assert len(set(names)) == len(names) and all(n.isidentifier() for n in names), name
        assert sorted(modifier["formula"].replace(" ", "").split("+")) == sorted(names), name
        assert modifier["metricType"] == "AverageValue", name
        assert {modifier["target"]} == {t["metadata"]["listLength"] for t in spec["triggers"]}, name
        for trigger in spec["triggers"]:
            assert trigger["type"] == "redis"
            assert int(trigger["metadata"]["listLength"]) >= 1
            assert trigger["metadata"]["address"] == redis_address
            auth = auths[trigger["authenticationRef"]["name"]]
            for ref in auth["spec"]["secretTargetRef"]:
                assert ref["key"] in secrets[ref["name"]]["stringData"]
            assert {r["parameter"] for r in auth["spec"]["secretTargetRef"]} == {"password"}


def test_workers_outlast_the_longest_stage_on_shutdown() -> None:
    longest = config().stage_time_limit
    assert longest is not None, "MODELFLEET_STAGE_TIME_LIMIT bounds the longest stage"
    assert config().visibility_timeout > longest
    for name, deployment in workers().items():
        assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > longest, name


def test_redis_is_persistent_never_evicts_and_needs_the_password() -> None:
    (redis,) = of_kind("StatefulSet").values()
    (container,) = redis["spec"]["template"]["spec"]["containers"]
    env = env_of(container)
    args, config = shell_redis_server(container["command"], env)
    assert args[args.index("--appendonly") + 1] == "yes"
    assert args[args.index("--maxmemory-policy") + 1] == "noeviction"
    assert args[args.index("--maxmemory") + 1] not in ("0", "")
    # requirepass comes in on stdin, from the Secret through the environment.
    assert redis_config_value(config, "requirepass") == env["REDIS_PASSWORD"]
    assert "args" not in container and "--requirepass" not in args
    assert env["REDIS_PASSWORD"] == env["REDISCLI_AUTH"]
    assert {m["mountPath"] for m in container["volumeMounts"]} == {"/data"}
    assert "redis-cli ping" in " ".join(container["readinessProbe"]["exec"]["command"])


def test_no_secret_is_on_a_command_line() -> None:
    """The pod spec and `ps` show every container's command and args: Kubernetes' $(VAR)
    expansion there would put a Secret's value on them. Secrets go through env only."""
    secrets = [v for s in of_kind("Secret").values() for k, v in s["stringData"].items() if "password" in k]
    secret_vars = {var["name"] for _, _, c in containers() for var in c.get("env", [])
                   if "secretKeyRef" in var.get("valueFrom", {})}
    for name, _, container in containers():
        env = env_of(container)
        for arg in container.get("command", []) + container.get("args", []):
            assert not set(re.findall(r"\$\((\w+)\)", arg)) & secret_vars, (name, arg)
            expanded = re.sub(r"\$\((\w+)\)", lambda m, env=env: env[m[1]], arg)
            assert not any(s in expanded for s in secrets), (name, arg)
    flower = of_kind("Deployment")["modelfleet-flower"]["spec"]["template"]["spec"]["containers"][0]
    env = env_of(flower)
    assert env["FLOWER_BASIC_AUTH"] == f"{env['MODELFLEET_FLOWER_USER']}:{env['MODELFLEET_FLOWER_PASSWORD']}"


# --- the same commands as docker-compose.yml ---------------------------------------------
def test_commands_match_the_compose_services() -> None:
    compose = load_compose(read_env_file(ENV_EXAMPLE))["services"]
    deployments = of_kind("Deployment")
    flower = deployments["modelfleet-flower"]["spec"]["template"]["spec"]["containers"][0]["command"]
    assert flower == compose["flower"]["command"]
    (redis,) = of_kind("StatefulSet").values()
    k8s_redis = redis["spec"]["template"]["spec"]["containers"][0]["command"]
    # The same script, but for the memory cap (the pod's limit) and compose's $$ escape.
    assert re.sub(r"--maxmemory \S+", "", k8s_redis[2]) == re.sub(
        r"--maxmemory \S+", "", compose["redis"]["command"][2])
    for deployment, service in (("modelfleet-worker-train", "worker-train"),
                                ("modelfleet-worker-large", "worker-large")):
        worker = deployments[deployment]["spec"]["template"]["spec"]["containers"][0]
        assert worker["command"] == compose[service]["command"]
    (job,) = of_kind("Job").values()
    container = job["spec"]["template"]["spec"]["containers"][0]
    env = env_of(container)
    submitted = [re.sub(r"\$\((\w+)\)", lambda m: env[m[1]], a) for a in container["command"]]
    assert submitted == compose["producer"]["command"]


# --- the team's data and specs -------------------------------------------------------------
def mounts_of(spec: Manifest, container: Manifest) -> dict[str, tuple[Manifest, bool]]:
    """Mount path -> (the volume, read-only?) of one container."""
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    return {m["mountPath"]: (volumes[m["name"]], bool(m.get("readOnly"))) for m in container["volumeMounts"]}


def test_data_is_mounted_read_only_where_the_data_root_is() -> None:
    claims = of_kind("PersistentVolumeClaim")
    assert claims["modelfleet-data"]["spec"]["accessModes"] == ["ReadWriteMany"]
    readers = {**workers(), **of_kind("Job")}
    for name, workload in readers.items():
        spec = workload["spec"]["template"]["spec"]
        (container,) = spec["containers"]
        data_root = str(settings_from_env(env_of(container)).data_root)
        volume, read_only = mounts_of(spec, container)[data_root]
        assert read_only and volume["persistentVolumeClaim"] == {"claimName": "modelfleet-data",
                                                                 "readOnly": True}, name


def test_the_producer_job_submits_the_spec_its_env_names_from_the_specs_mount() -> None:
    (job,) = of_kind("Job").values()
    spec = job["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    env = env_of(container)
    volume, read_only = mounts_of(spec, container)["/specs"]
    assert read_only and volume["configMap"]["name"] == SPECS_CONFIGMAP
    assert "$(MODELFLEET_SPEC)" in container["command"]
    assert env["MODELFLEET_SPEC"].startswith("/specs/")
    # The example it names by default is one the team's ConfigMap can be made from.
    assert (K8S.parents[1] / "examples" / Path(env["MODELFLEET_SPEC"]).name).is_file()
    # ... and the file says how to make that ConfigMap.
    assert f"create configmap {SPECS_CONFIGMAP} --from-file=" in (K8S / "producer-job.yaml").read_text()


# --- the S3 overlay (deploy/k8s/s3) ---------------------------------------------------------
S3_OVERLAY = K8S / "s3"
# The list merge keys of the fields the overlay patches (Kubernetes' patchMergeKey).
_MERGE_KEYS = {"containers": "name", "volumes": "name", "volumeMounts": "mountPath", "env": "name"}


def strategic_merge(into: Manifest, patch: Manifest) -> None:
    """The part of a strategic merge patch the overlay uses: maps merged, keyed lists merged by
    key (`$patch: delete` removes an item), other lists and values replaced."""
    for key, value in patch.items():
        if key == "metadata":
            continue  # a targeted patch's name is a placeholder
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            strategic_merge(into[key], value)
        elif isinstance(value, list) and key in _MERGE_KEYS:
            items, merge_key = into.setdefault(key, []), _MERGE_KEYS[key]
            for item in value:
                existing = next((i for i in items if i[merge_key] == item[merge_key]), None)
                if item.get("$patch") == "delete":
                    assert existing is not None, f"nothing to delete at {key}[{item[merge_key]}]"
                    items.remove(existing)
                elif existing is not None:
                    strategic_merge(existing, item)
                else:
                    items.append(item)
            if not items:
                del into[key]
        else:
            into[key] = value


def s3_overlay() -> list[Manifest]:
    """The manifests `kubectl apply -k deploy/k8s/s3` applies, built offline."""
    kustomization = yaml.safe_load((S3_OVERLAY / "kustomization.yaml").read_text())
    assert kustomization["resources"] == ["../"]
    out = [copy.deepcopy(m) for f, m in MANIFESTS if f not in NOT_IN_KUSTOMIZATION]
    for entry in kustomization["patches"]:
        patch = yaml.safe_load((S3_OVERLAY / entry["path"]).read_text())
        target = entry.get("target") or {"kind": patch["kind"], "name": patch["metadata"]["name"]}
        labels = dict(kv.split("=") for kv in target.get("labelSelector", "").split(",") if kv)
        matched = [m for m in out if m["kind"] == target["kind"]
                   and target.get("name", name_of(m)) == name_of(m)
                   and labels.items() <= m["metadata"].get("labels", {}).items()]
        assert matched, f"{entry['path']} patches nothing"
        for manifest in matched:
            if patch.get("$patch") == "delete":
                out.remove(manifest)
            else:
                strategic_merge(manifest, patch)
    return out


def test_s3_overlay_yields_valid_kubernetes_without_the_claim() -> None:
    manifests = s3_overlay()
    for manifest in manifests:
        if not manifest["apiVersion"].startswith("keda.sh/"):
            kubernetes_validate.validate(manifest, kubernetes_validate.latest_version(), strict=True)
    claims = {name_of(m) for m in manifests if m["kind"] == "PersistentVolumeClaim"}
    assert "modelfleet-artifacts" not in claims
    for manifest in manifests:  # nothing mounts the dropped claim
        assert "modelfleet-artifacts" not in json.dumps(manifest.get("spec", {})), name_of(manifest)


def test_s3_overlay_gives_every_worker_the_bucket_and_the_keys() -> None:
    manifests = s3_overlay()
    config = next(m for m in manifests if m["kind"] == "ConfigMap")["data"]
    (secret,) = [m for _, m in load_manifests_in(S3_OVERLAY) if m["kind"] == "Secret"]
    assert set(secret["stringData"]) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    assert all(v.startswith("change-me") for v in secret["stringData"].values())
    kubernetes_validate.validate(secret, kubernetes_validate.latest_version(), strict=True)
    worker_deployments = [m for m in manifests if m["kind"] == "Deployment"
                          and m["metadata"]["labels"].get("app.kubernetes.io/component") == "worker"]
    assert {name_of(d) for d in worker_deployments} == set(workers())
    for deployment in worker_deployments:
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        sources = container["envFrom"]
        assert {"configMapRef": {"name": "modelfleet-config"}} in sources
        assert {"secretRef": {"name": name_of(secret)}} in sources
        mounted = {m["mountPath"] for m in container.get("volumeMounts", [])}
        assert "/var/lib/modelfleet/artifacts" not in mounted, name_of(deployment)
        volumes = deployment["spec"]["template"]["spec"].get("volumes", [])
        assert "artifacts" not in {v["name"] for v in volumes}
    settings = settings_from_env(config)
    assert isinstance(settings.artifact_root, str) and settings.artifact_root.startswith("s3://")
    assert settings.s3_endpoint_url is None  # empty: AWS's own endpoint for the region
    assert settings.s3_client_options() == {"region_name": config["MODELFLEET_S3_REGION"]}


def load_manifests_in(folder: Path) -> list[tuple[str, Manifest]]:
    return [(p.name, doc) for p in sorted(folder.glob("*.example.yaml"))
            for doc in yaml.safe_load_all(p.read_text()) if doc]
