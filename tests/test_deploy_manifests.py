"""The deployment files, checked without a cluster. All three Serve configs (serve_config.yaml,
deploy/serve_cluster.yaml, and the KubeRay manifest's serveConfigV2) must parse as Ray Serve configs
and describe the same application. The KubeRay RayService is checked against KubeRay's CRD schema
(vendored in deploy/kuberay/). Its pod templates and the other core objects are checked against
Kubernetes' own schemas from the pinned kubernetes-validate package, in strict mode (unknown fields
fail)."""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from state.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
SERVE_CONFIG = ROOT / "serve_config.yaml"
CLUSTER_CONFIG = ROOT / "deploy" / "serve_cluster.yaml"
RAYSERVICE = ROOT / "deploy" / "kuberay" / "rayservice.yaml"
CRD_SCHEMA = ROOT / "deploy" / "kuberay" / "rayservice-crd-v1.schema.yaml"
K8S_VERSION = "1.37.0"  # schemas shipped by the pinned kubernetes-validate


def strict(schema: Any) -> Any:
    """`additionalProperties: false` wherever an object lists its properties and does not preserve
    unknown fields: what `kubectl apply --validate=strict` enforces."""
    if isinstance(schema, dict):
        schema = {k: strict(v) for k, v in schema.items()}
        if "properties" in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
            schema.setdefault("additionalProperties", False)
        return schema
    if isinstance(schema, list):
        return [strict(v) for v in schema]
    return schema


def crd_errors(doc: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft7Validator(strict(yaml.safe_load(CRD_SCHEMA.read_text())))
    return [f"{'/'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(doc)]


def manifests() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(RAYSERVICE.read_text()) if d]


def rayservice() -> dict[str, Any]:
    return next(d for d in manifests() if d["kind"] == "RayService")


def serve_configs() -> dict[str, dict[str, Any]]:
    return {"serve_config.yaml": yaml.safe_load(SERVE_CONFIG.read_text()),
            "deploy/serve_cluster.yaml": yaml.safe_load(CLUSTER_CONFIG.read_text()),
            "serveConfigV2": yaml.safe_load(rayservice()["spec"]["serveConfigV2"])}


def ray_start_resources(params: dict[str, str]) -> dict[str, float]:
    """KubeRay's quoting of `--resources`: a JSON object inside a quoted string."""
    return json.loads(json.loads(params["resources"]))


@pytest.mark.parametrize("name", ["serve_config.yaml", "deploy/serve_cluster.yaml", "serveConfigV2"])
def test_serve_configs_parse_as_ray_serve_configs(name):
    cfg = ServeDeploySchema.model_validate(serve_configs()[name])
    pool = next(d for d in cfg.applications[0].deployments if d.name == "RerankerPool")
    assert pool.num_replicas == "auto" and pool.autoscaling_config["min_replicas"] >= 1


def test_serve_configs_deploy_the_same_application():
    apps = {name: cfg["applications"] for name, cfg in serve_configs().items()}
    for app in apps.values():
        assert len(app) == 1
    ignore = ("runtime_env",)  # per install: what the cluster files add
    first, *rest = ({k: v for k, v in app[0].items() if k not in ignore} for app in apps.values())
    for other in rest:
        assert other == first
    # the cluster files place the deployments the same way
    envs = [apps[n][0]["runtime_env"]["env_vars"] for n in ("deploy/serve_cluster.yaml", "serveConfigV2")]
    for key in ("RERANKER_POOL_RESOURCES", "RERANKER_INGRESS_RESOURCES", "RERANKER_HOME"):
        assert envs[0][key] == envs[1][key]


def test_every_variable_the_files_set_is_a_setting_of_the_right_type(monkeypatch):
    variables: dict[str, str] = {}
    for cfg in serve_configs().values():
        for app in cfg["applications"]:
            variables.update(app.get("runtime_env", {}).get("env_vars", {}))
    for doc in manifests():
        for group in [doc.get("spec", {}).get("rayClusterConfig", {}).get("headGroupSpec", {}),
                      *doc.get("spec", {}).get("rayClusterConfig", {}).get("workerGroupSpecs", [])]:
            for container in group.get("template", {}).get("spec", {}).get("containers", []):
                variables.update({e["name"]: e.get("value", "from-secret") for e in container.get("env", [])})
    ours = {k: v for k, v in variables.items() if k.startswith("RERANKER_")}
    fields = {f"RERANKER_{name.upper()}" for name in Settings.model_fields}
    assert set(ours) <= fields, set(ours) - fields
    for k, v in ours.items():
        monkeypatch.setenv(k, v if v != "from-secret" else "x")
    s = Settings()  # parses every value: the resource maps are JSON objects
    assert s.pool_resources == {"reranker_pool": 1} and s.ingress_resources == {"reranker_ingress": 1}


def test_rayservice_matches_kuberays_crd():
    doc = rayservice()
    assert doc["apiVersion"] == "ray.io/v1"
    assert crd_errors(doc) == []


def test_the_crd_check_catches_misspelt_and_missing_fields():
    doc = rayservice()
    misspelt = copy.deepcopy(doc)
    misspelt["spec"]["rayClusterConfig"]["workerGroupSpec"] = misspelt["spec"]["rayClusterConfig"].pop(
        "workerGroupSpecs")
    assert any("workerGroupSpec" in e for e in crd_errors(misspelt))
    missing = copy.deepcopy(doc)
    del missing["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["groupName"]
    assert any("groupName" in e for e in crd_errors(missing))
    wrong_type = copy.deepcopy(doc)
    wrong_type["spec"]["rayClusterConfig"]["headGroupSpec"]["rayStartParams"]["num-cpus"] = 0
    assert crd_errors(wrong_type)  # rayStartParams values are strings


def test_pod_templates_and_core_objects_match_kubernetes_schemas():
    cluster = rayservice()["spec"]["rayClusterConfig"]
    templates = [cluster["headGroupSpec"]["template"], *(g["template"] for g in cluster["workerGroupSpecs"])]
    for i, template in enumerate(templates):
        kubernetes_validate.validate({"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": f"t{i}"},
                                      "template": template}, K8S_VERSION, strict=True)
    core = [d for d in manifests() if d["kind"] != "RayService"]
    assert core
    for doc in core:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    with pytest.raises(kubernetes_validate.ValidationError):
        bad = copy.deepcopy(templates[0])
        bad["spec"]["containers"][0]["resource"] = bad["spec"]["containers"][0].pop("resources")
        kubernetes_validate.validate({"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "bad"},
                                      "template": bad}, K8S_VERSION, strict=True)


def test_pods_offer_what_the_deployments_ask_for():
    """Placement holds on Kubernetes too: the head takes the ingress and no CPU work, the pool group's
    custom resource is the one the pool asks for, and every pod mounts the shared home."""
    cluster = rayservice()["spec"]["rayClusterConfig"]
    env = yaml.safe_load(rayservice()["spec"]["serveConfigV2"])["applications"][0]["runtime_env"]["env_vars"]
    head = cluster["headGroupSpec"]["rayStartParams"]
    assert head["num-cpus"] == "0"
    assert set(ray_start_resources(head)) == set(json.loads(env["RERANKER_INGRESS_RESOURCES"]))
    (pool,) = cluster["workerGroupSpecs"]
    assert set(ray_start_resources(pool["rayStartParams"])) == set(json.loads(env["RERANKER_POOL_RESOURCES"]))
    container = pool["template"]["spec"]["containers"][0]
    assert pool["rayStartParams"]["num-cpus"] == container["resources"]["limits"]["cpu"]
    per_pod = ray_start_resources(pool["rayStartParams"])["reranker_pool"]
    assert per_pod * float(env["RERANKER_POOL_NUM_CPUS"]) + float(env["RERANKER_TRAIN_NUM_CPUS"]) <= float(
        pool["rayStartParams"]["num-cpus"])  # full pool replicas leave room for a training job
    for group in [cluster["headGroupSpec"], pool]:
        mounts = group["template"]["spec"]["containers"][0]["volumeMounts"]
        assert env["RERANKER_HOME"] in {m["mountPath"] for m in mounts}
