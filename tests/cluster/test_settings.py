"""Settings from the environment become the platform's configuration objects."""

from __future__ import annotations

import stat

import pytest
from pydantic import ValidationError

from cluster.settings import Settings
from storage.errors import InvalidRequest
from storage.workflow_spec import WorkflowLimits, compile_spec

SECRET = "Qm4v_Lp2xQz8Wm4Ty6Ub1Nc7Hd5Jf0Ga-EsR9kB3nM7pX2cV6tY1uI8oP5aS0dF"


def settings(monkeypatch, tmp_path, **env: str) -> Settings:
    monkeypatch.chdir(tmp_path)  # no .env of the working directory
    monkeypatch.setenv("YMERA_STATE_DIR", str(tmp_path))
    for name, value in env.items():
        monkeypatch.setenv(f"YMERA_{name}", value)
    return Settings()


def test_a_tenant_quota_below_the_queue_bound_is_passed_on(monkeypatch, tmp_path) -> None:
    assert settings(monkeypatch, tmp_path).orchestrator_config().tenant_queue_max == 5000
    config = settings(monkeypatch, tmp_path, TENANT_QUEUE_MAX="20").orchestrator_config()
    assert config.tenant_queue_max == 20


def test_a_tenant_quota_at_the_queue_bound_means_none(monkeypatch, tmp_path) -> None:
    config = settings(monkeypatch, tmp_path, QUEUE_MAX="100",
                      TENANT_QUEUE_MAX="100").orchestrator_config()
    assert config.tenant_queue_max is None and config.queue_max == 100


@pytest.mark.parametrize("name, value", [("TENANT_QUEUE_MAX", "0"),
                                         ("API_AUTH_CACHE_S", "-1"),
                                         ("API_AUTH_CACHE_S", "301"),
                                         ("LOG_FORMAT", "xml"),
                                         ("METRICS_PORT", "6379"),
                                         ("API_MAX_REPLICAS", "0"),
                                         ("ROUTER_TENANT_CACHE_EXAMPLES", "0")])
def test_out_of_range_settings_are_refused_by_name(monkeypatch, tmp_path, name, value) -> None:
    with pytest.raises(ValidationError, match=name.lower()):
        settings(monkeypatch, tmp_path, **{name: value})


def test_the_routers_tenant_cache_bound_reaches_the_router(monkeypatch, tmp_path) -> None:
    assert settings(monkeypatch, tmp_path).router_config().tenant_cache_examples == 50_000
    config = settings(monkeypatch, tmp_path, ROUTER_TENANT_CACHE_EXAMPLES="1000").router_config()
    assert config.tenant_cache_examples == 1000


def test_the_auth_cache_time_reaches_the_api(monkeypatch, tmp_path) -> None:
    api = settings(monkeypatch, tmp_path, JWT_SECRET=SECRET,
                   API_AUTH_CACHE_S="0").api_config()
    assert api.auth_cache_s == 0


def test_observability_settings_reach_the_orchestrator_and_the_api(monkeypatch, tmp_path) -> None:
    chosen = settings(monkeypatch, tmp_path, JWT_SECRET=SECRET, METRICS_HOST="0.0.0.0",
                      METRICS_PORT="9999", LOG_FORMAT="json", LOG_LEVEL="DEBUG")
    config = chosen.orchestrator_config()
    assert (config.metrics_host, config.metrics_port) == ("0.0.0.0", 9999)
    assert (config.log_format, config.log_level) == ("json", "DEBUG")
    api = chosen.api_config()
    assert (api.log_format, api.log_level) == ("json", "DEBUG")


@pytest.mark.parametrize("env, message", [
    ({"METRICS_PORT": "8265"}, "metrics_port and dashboard_port are both 8265"),
    ({"API_REPLICAS": "3", "API_MAX_REPLICAS": "2"}, "api_max_replicas cannot be below"),
    ({"POOLS": '{"calculator": {"min_replicas": 3, "max_replicas": 2}}'},
     r"max_replicas \(2\) is below min_replicas or replicas \(3\)"),
    ({"POOLS": '{"calculator": {"replicas": 3, "max_replicas": 2}}'}, "is below min_replicas"),
    ({"POOLS": '{"learning": {"resources": {"ml": 0}}}'}, "custom resource amount"),
    ({"POOLS": '{"calculator": {"max_replica": 2}}'}, "max_replica"),
    ({"POOLS": '{"calculator": {"replicas": 300}}'}, "replicas must be a number from 0 to 256"),
    ({"POOLS": '{"calculator": {"concurrency": 0}}'}, "concurrency must be a number from 1"),
    ({"POOLS": '{"calculator": {"num_cpus": "nan"}}'}, "num_cpus must be a number at least 0"),
])
def test_inconsistent_settings_are_refused_with_the_reason(monkeypatch, tmp_path, env,
                                                           message) -> None:
    with pytest.raises(ValidationError, match=message):
        settings(monkeypatch, tmp_path, **env)


def test_pool_autoscaling_settings_reach_the_orchestrator(monkeypatch, tmp_path) -> None:
    config = settings(
        monkeypatch, tmp_path, POOL_UPSCALE_DELAY_S="5", POOL_DOWNSCALE_DELAY_S="120",
        REPLICA_START_TIMEOUT_S="900",
        POOLS='{"calculator": {"min_replicas": 1, "max_replicas": 8, "target_backlog": 4},'
              ' "learning": {"resources": {"ml": 1}}}').orchestrator_config()
    assert (config.autoscale.upscale_delay_s, config.autoscale.downscale_delay_s) == (5, 120)
    assert config.replica_start_timeout_s == 900
    calculator = config.pool("calculator")
    assert (calculator.min_replicas, calculator.max_replicas, calculator.target_backlog) == (
        1, 8, 4)
    assert config.pool("learning").resources == {"ml": 1}


def test_the_state_directory_is_made_private_at_start(monkeypatch, tmp_path) -> None:
    from cluster import platform

    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    state.chmod(0o755)
    configured = settings(monkeypatch, tmp_path)
    configured = configured.model_copy(update={"state_dir": state})

    class Stop(Exception):
        pass

    def migrate(url: str) -> None:
        raise Stop  # what `up` does after making the state directory ready is not tested here

    monkeypatch.setattr(platform, "migrate", migrate)
    with pytest.raises(Stop):
        platform.up(configured)

    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    fresh = configured.model_copy(update={"state_dir": tmp_path / "new" / "state"})
    fresh.signing_secret()
    assert stat.S_IMODE(fresh.state_path.stat().st_mode) == 0o700
    assert stat.S_IMODE((fresh.state_path / "jwt-secret").stat().st_mode) == 0o600


def test_the_payload_depth_limit_reaches_the_orchestrator_and_the_api(monkeypatch,
                                                                     tmp_path) -> None:
    defaults = settings(monkeypatch, tmp_path, JWT_SECRET=SECRET)
    assert defaults.orchestrator_config().max_payload_depth == 64
    assert defaults.api_config().max_payload_depth == 64
    chosen = settings(monkeypatch, tmp_path, JWT_SECRET=SECRET, MAX_PAYLOAD_DEPTH="20")
    assert chosen.orchestrator_config().max_payload_depth == 20
    assert chosen.api_config().max_payload_depth == 20
    with pytest.raises(ValidationError, match="max_payload_depth"):
        settings(monkeypatch, tmp_path, MAX_PAYLOAD_DEPTH="129")


def test_workflow_limits_and_retention_reach_the_orchestrator(monkeypatch, tmp_path) -> None:
    defaults = settings(monkeypatch, tmp_path).orchestrator_config()
    assert defaults.workflow_limits == WorkflowLimits(
        max_steps=200, max_fan_out=1000, max_parallelism=64, max_output_bytes=262_144,
        max_run_duration_s=604_800, max_step_timeout_s=3600)  # the task timeout bound
    assert (defaults.workflow_retention_s, defaults.workflow_purge_interval_s) == (2_592_000, 3600)
    config = settings(
        monkeypatch, tmp_path, WORKFLOW_MAX_STEPS="10", WORKFLOW_MAX_FAN_OUT="50",
        WORKFLOW_MAX_PARALLELISM="4", WORKFLOW_MAX_OUTPUT_BYTES="4096",
        WORKFLOW_MAX_RUN_DURATION_S="1800", WORKFLOW_RETENTION_S="86400",
        WORKFLOW_PURGE_INTERVAL_S="600").orchestrator_config()
    assert config.workflow_limits == WorkflowLimits(
        max_steps=10, max_fan_out=50, max_parallelism=4, max_output_bytes=4096,
        max_run_duration_s=1800, max_step_timeout_s=1800)
    assert (config.workflow_retention_s, config.workflow_purge_interval_s) == (86400, 600)
    small_payloads = settings(monkeypatch, tmp_path, MAX_PAYLOAD_BYTES="100000",
                              WORKFLOW_MAX_OUTPUT_BYTES="262144").orchestrator_config()
    assert small_payloads.workflow_limits.max_output_bytes == 100_000  # the smaller bound


def test_submitted_workflows_are_held_to_the_configured_limits(monkeypatch, tmp_path) -> None:
    limits = settings(monkeypatch, tmp_path, WORKFLOW_MAX_STEPS="2",
                      WORKFLOW_MAX_FAN_OUT="5").orchestrator_config().workflow_limits
    step = {"agent_type": "calculator", "payload": {"expression": "1+1"}}
    three = {"name": "w", "steps": [{"id": f"s{i}", **step} for i in range(3)]}
    with pytest.raises(InvalidRequest, match="has 3 steps; at most 2 per run"):
        compile_spec(three, ["calculator"], limits)
    wide = {"name": "w", "steps": [{"id": "each", **step,
                                    "map_over": {"over": "input.items", "max_width": 6}}]}
    with pytest.raises(InvalidRequest, match="step 'each' map_over.max_width: .* from 1 to 5"):
        compile_spec(wide, ["calculator"], limits)
    assert compile_spec(three | {"steps": three["steps"][:2]}, ["calculator"], limits)


@pytest.mark.parametrize("name, value", [("WORKFLOW_MAX_STEPS", "0"),
                                         ("WORKFLOW_MAX_FAN_OUT", "-1"),
                                         ("WORKFLOW_MAX_PARALLELISM", "0"),
                                         ("WORKFLOW_MAX_OUTPUT_BYTES", "100"),
                                         ("WORKFLOW_MAX_RUN_DURATION_S", "0"),
                                         ("WORKFLOW_MAX_RUN_DURATION_S", "a week"),
                                         ("WORKFLOW_RETENTION_S", "0"),
                                         ("WORKFLOW_PURGE_INTERVAL_S", "1")])
def test_bad_workflow_settings_are_refused_by_name(monkeypatch, tmp_path, name, value) -> None:
    with pytest.raises(ValidationError, match=name.lower()):
        settings(monkeypatch, tmp_path, **{name: value})


def test_webhook_settings_reach_the_orchestrator_and_the_agents(monkeypatch, tmp_path) -> None:
    defaults = settings(monkeypatch, tmp_path).orchestrator_config().webhooks
    assert (defaults.retry_period_s, defaults.retry_base_s, defaults.retry_max_s,
            defaults.timeout_s, defaults.max_in_flight) == (86400, 5, 3600, 10, 32)
    assert defaults.allowed_networks == () and not defaults.allow_private_networks

    configured = settings(monkeypatch, tmp_path, WEBHOOK_RETRY_PERIOD_S="600",
                          WEBHOOK_RETRY_BASE_S="1", WEBHOOK_RETRY_MAX_S="60",
                          WEBHOOK_MAX_IN_FLIGHT="4",
                          WEBHOOK_ALLOWED_NETWORKS=" 127.0.0.1 , 10.8.0.0/16")
    webhooks = configured.orchestrator_config().webhooks
    assert (webhooks.retry_period_s, webhooks.retry_base_s, webhooks.retry_max_s,
            webhooks.max_in_flight) == (600, 1, 60, 4)
    assert webhooks.allowed_networks == ("127.0.0.1/32", "10.8.0.0/16")
    agents = configured.agent_settings()
    assert agents["webhook_allowed_networks"] == "127.0.0.1/32,10.8.0.0/16"


@pytest.mark.parametrize("env, reason", [
    ({"WEBHOOK_ALLOWED_NETWORKS": "10.0.0.0/8,intranet"}, "'intranet' is not a network"),
    ({"WEBHOOK_RETRY_BASE_S": "10", "WEBHOOK_RETRY_MAX_S": "5"}, "webhook_retry_max_s"),
    ({"WEBHOOK_MAX_IN_FLIGHT": "0"}, "webhook_max_in_flight"),
    ({"WEBHOOK_RETRY_PERIOD_S": "0"}, "webhook_retry_period_s"),
])
def test_bad_webhook_settings_are_refused_with_the_reason(monkeypatch, tmp_path, env,
                                                          reason) -> None:
    with pytest.raises(ValidationError, match=reason):
        settings(monkeypatch, tmp_path, **env)
