"""The API's replica count: fixed or autoscaled in code (`ApiScaling`), and autoscaled by the
shipped Serve config file, checked with Serve's own schema. No Ray cluster is needed: these
inspect the deployment options a `serve.run` or `serve deploy` would send."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from ray.serve.config import AutoscalingConfig
from ray.serve.schema import ServeDeploySchema

from serve_apps.api_config import ApiConfig
from serve_apps.deployment import (
    MAX_ONGOING_REQUESTS, ApiIngress, ApiScaling, app_builder, build_api,
)

SERVE_CONFIG = Path(__file__).resolve().parents[2] / "serve_apps" / "serve_config.yaml"
SECRET = "Zq4v_Lp2xQz8Wm4Ty6Ub1Nc7Hd5Jf0Ga-EsR9kB3nM7pX2cV6tY1uI8oP5aS0dF"
POSTGRES = "postgresql+asyncpg://ymera@db/ymera"


def _deployment_config(app: Any) -> Any:
    return app._bound_deployment._deployment_config


def _config(database_url: str = POSTGRES) -> ApiConfig:
    return ApiConfig(jwt_secret=SECRET, database_url=database_url)


def test_autoscaled_api_carries_serves_autoscaling_config() -> None:
    scaling = ApiScaling(2, 6, target_ongoing_requests=20, upscale_delay_s=5,
                         downscale_delay_s=120)
    config = _deployment_config(build_api(_config(), scaling=scaling))
    autoscaling = config.autoscaling_config
    assert isinstance(autoscaling, AutoscalingConfig)
    assert (autoscaling.min_replicas, autoscaling.max_replicas) == (2, 6)
    assert autoscaling.target_ongoing_requests == 20
    assert (autoscaling.upscale_delay_s, autoscaling.downscale_delay_s) == (5, 120)
    assert config.max_ongoing_requests == MAX_ONGOING_REQUESTS
    assert "num_replicas" not in config.user_configured_option_names


def test_equal_bounds_give_a_fixed_replica_count() -> None:
    for app in (build_api(_config(), scaling=ApiScaling(3, 3)), build_api(_config(), 3)):
        config = _deployment_config(app)
        assert config.autoscaling_config is None
        assert config.num_replicas == 3


def test_sqlite_api_stays_on_the_head_node_when_autoscaled() -> None:
    app = build_api(_config("sqlite:///state/ymera.db"), scaling=ApiScaling(1, 4))
    actor_options = app._bound_deployment.ray_actor_options
    assert "node:__internal_head__" in actor_options["resources"]
    assert _deployment_config(app).autoscaling_config.max_replicas == 4


@pytest.mark.parametrize("bounds, message", [
    ({"min_replicas": 0}, "min_replicas"),
    ({"min_replicas": 3, "max_replicas": 2}, "max_replicas"),
    ({"max_replicas": 2, "target_ongoing_requests": MAX_ONGOING_REQUESTS + 1},
     "target_ongoing_requests"),
    ({"max_replicas": 2, "downscale_delay_s": -1}, "downscale_delay_s"),
])
def test_bad_scaling_is_refused(bounds: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ApiScaling(**bounds)


def test_serve_config_file_autoscales_the_ingress_and_passes_serves_schema() -> None:
    document = yaml.safe_load(SERVE_CONFIG.read_text())
    schema = ServeDeploySchema.model_validate(document)
    (application,) = schema.applications
    (deployment,) = application.deployments
    assert deployment.name == ApiIngress.name
    autoscaling = AutoscalingConfig(**deployment.autoscaling_config)
    assert autoscaling.min_replicas < autoscaling.max_replicas
    assert autoscaling.target_ongoing_requests <= deployment.max_ongoing_requests
    assert deployment.max_ongoing_requests == MAX_ONGOING_REQUESTS
    assert "replicas" not in application.args


def test_builder_leaves_the_count_to_the_config_file_unless_given(tmp_path: Path) -> None:
    secret_file = tmp_path / "jwt-secret"
    secret_file.write_text(SECRET)
    args = {"jwt_secret_file": str(secret_file), "database_url": POSTGRES}
    from_file = _deployment_config(app_builder(args))
    assert "num_replicas" not in from_file.user_configured_option_names
    assert from_file.autoscaling_config is None
    fixed = _deployment_config(app_builder({**args, "replicas": 2}))
    assert fixed.num_replicas == 2
