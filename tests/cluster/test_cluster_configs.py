"""The deployment configs: `cluster.yaml` passes the checks `ray up` runs before it contacts
the cloud (`prepare_config` then `validate_config`), and the KubeRay `RayService` carries the
fields KubeRay requires, with a Serve config that Serve's own schema accepts."""

from __future__ import annotations

import copy
import json
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config
from ray.serve.schema import ServeDeploySchema

ROOT = Path(__file__).resolve().parents[2]
CLUSTER_YAML = ROOT / "cluster.yaml"
RAYSERVICE_YAML = ROOT / "cluster" / "kubernetes" / "rayservice.yaml"


@pytest.fixture(scope="module")
def launcher_config() -> dict[str, Any]:
    raw = yaml.safe_load(CLUSTER_YAML.read_text())
    prepared = prepare_config(copy.deepcopy(raw))
    validate_config(prepared)
    return prepared


@pytest.fixture(scope="module")
def rayservice() -> dict[str, Any]:
    return yaml.safe_load(RAYSERVICE_YAML.read_text())


def _ray_start_args(commands: list[str]) -> list[str]:
    (start,) = [c for c in commands if "ray start" in c]
    return shlex.split(start.replace(";", " "))


def test_cluster_yaml_passes_ray_up_validation(launcher_config: dict[str, Any]) -> None:
    assert launcher_config["provider"]["type"] == "aws"
    types = launcher_config["available_node_types"]
    assert launcher_config["head_node_type"] in types
    assert {"cpu_worker", "ml_worker"} <= set(types)
    assert launcher_config["idle_timeout_minutes"] > 0
    for name in ("cpu_worker", "ml_worker"):
        assert 0 <= types[name]["min_workers"] <= types[name]["max_workers"]
        assert types[name]["max_workers"] <= launcher_config["max_workers"]


def test_only_ml_workers_advertise_the_ml_resource(launcher_config: dict[str, Any]) -> None:
    types = launcher_config["available_node_types"]
    assert types["ml_worker"]["resources"].get("ml", 0) >= 1
    assert "ml" not in types[launcher_config["head_node_type"]]["resources"]
    assert "ml" not in types["cpu_worker"]["resources"]


def test_nodes_install_the_platform_from_the_synced_repo(launcher_config: dict[str, Any]) -> None:
    assert launcher_config["file_mounts"]["~/ymera"] == "."
    setup = launcher_config["setup_commands"]
    torch = next(i for i, c in enumerate(setup) if "download.pytorch.org/whl/cpu" in c)
    platform = next(i for i, c in enumerate(setup) if c.endswith("pip install -e ~/ymera"))
    assert torch < platform


def test_ray_starts_with_the_platform_ports_and_token_auth(
        launcher_config: dict[str, Any]) -> None:
    head = _ray_start_args(launcher_config["head_start_ray_commands"])
    worker = _ray_start_args(launcher_config["worker_start_ray_commands"])
    assert "--port=6380" in head and "--address=$RAY_HEAD_IP:6380" in worker
    for args in (head, worker):
        assert "RAY_AUTH_MODE=token" in args
        assert "--metrics-export-port=8080" in args
    assert not any(a.startswith("--dashboard-host") for a in head)
    assert "~/.ray/auth_token" in launcher_config["file_mounts"]


def test_rayservice_has_the_fields_kuberay_requires(rayservice: dict[str, Any]) -> None:
    assert rayservice["apiVersion"] == "ray.io/v1"
    assert rayservice["kind"] == "RayService"
    assert rayservice["metadata"]["name"]
    cluster = rayservice["spec"]["rayClusterConfig"]
    assert cluster["enableInTreeAutoscaling"] is True
    head = cluster["headGroupSpec"]
    assert head["template"]["spec"]["containers"][0]["image"].startswith("rayproject/ray:2.60.0")
    assert isinstance(head["rayStartParams"], dict)
    groups = {g["groupName"]: g for g in cluster["workerGroupSpecs"]}
    assert {"cpu", "ml"} <= set(groups)
    for group in groups.values():
        assert 0 <= group["minReplicas"] <= group["maxReplicas"]
        assert group["template"]["spec"]["containers"]
        assert all(isinstance(v, str) for v in group["rayStartParams"].values())
    assert json.loads(json.loads(groups["ml"]["rayStartParams"]["resources"])) == {"ml": 4}
    assert groups["ml"]["minReplicas"] >= 1  # the router always needs an ml node
    assert "resources" not in groups["cpu"]["rayStartParams"]


def test_rayservice_pods_use_token_auth_and_the_secret(rayservice: dict[str, Any]) -> None:
    cluster = rayservice["spec"]["rayClusterConfig"]
    specs = [cluster["headGroupSpec"]] + cluster["workerGroupSpecs"]
    for spec in specs:
        env = {e["name"]: e for e in spec["template"]["spec"]["containers"][0]["env"]}
        assert env["RAY_AUTH_MODE"]["value"] == "token"
        assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]["key"]
        assert env["YMERA_DATABASE_URL"]["valueFrom"]["secretKeyRef"]["key"]


def test_rayservice_serve_config_deploys_the_autoscaled_api(rayservice: dict[str, Any]) -> None:
    serve_config = yaml.safe_load(rayservice["spec"]["serveConfigV2"])
    schema = ServeDeploySchema.model_validate(serve_config)
    (application,) = schema.applications
    assert application.import_path == "serve_apps.deployment:app_builder"
    assert application.args["database_url"].startswith("postgresql")
    (deployment,) = application.deployments
    autoscaling = deployment.autoscaling_config
    assert autoscaling["min_replicas"] < autoscaling["max_replicas"]
    assert autoscaling["target_ongoing_requests"] <= deployment.max_ongoing_requests
