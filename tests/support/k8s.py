"""The Kubernetes manifests of deploy/k8s as data, and the views the tests take of them."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from bench.compose_local import settings_from_env
from workers.settings import Settings

K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
Manifest = dict[str, Any]


def load_manifests() -> list[tuple[str, Manifest]]:
    out = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        out += [(path.name, doc) for doc in yaml.safe_load_all(path.read_text()) if doc]
    return out


MANIFESTS = load_manifests()


def of_kind(kind: str) -> dict[str, Manifest]:
    return {name_of(m): m for _, m in MANIFESTS if m["kind"] == kind}


def name_of(manifest: Manifest) -> str:
    meta = manifest["metadata"]
    return str(meta.get("name") or meta["generateName"])


def workloads() -> dict[str, Manifest]:
    return {**of_kind("Deployment"), **of_kind("StatefulSet"), **of_kind("Job")}


def pod_specs() -> Iterator[tuple[str, Manifest]]:
    for name, workload in workloads().items():
        yield name, workload["spec"]["template"]


def containers() -> Iterator[tuple[str, Manifest, Manifest]]:
    for name, template in pod_specs():
        for container in template["spec"]["containers"]:
            yield name, template["spec"], container


def workers() -> dict[str, Manifest]:
    return {n: d for n, d in of_kind("Deployment").items()
            if d["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/component") == "worker"}


def queues_of(deployment: Manifest) -> list[str]:
    argv = deployment["spec"]["template"]["spec"]["containers"][0]["command"]
    return list(argv[argv.index("--queues") + 1].split(","))


def env_of(container: Manifest) -> dict[str, str]:
    """The container's environment as the app sees it: ConfigMaps, then env with
    $(VAR) expanded (Secrets resolved to their template values)."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(of_kind("ConfigMap")[source["configMapRef"]["name"]]["data"])
    for var in container.get("env", []):
        if "value" in var:
            value = re.sub(r"\$\((\w+)\)", lambda m: env[m[1]], var["value"])
        else:
            ref = var["valueFrom"]["secretKeyRef"]
            value = of_kind("Secret")[ref["name"]]["stringData"][ref["key"]]
        env[var["name"]] = value
    return env


def config() -> Settings:
    return settings_from_env(of_kind("ConfigMap")["modelfleet-config"]["data"])
