"""Settings from the environment become the platform's configuration objects."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from cluster.settings import Settings

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
                                         ("API_AUTH_CACHE_S", "301")])
def test_out_of_range_settings_are_refused_by_name(monkeypatch, tmp_path, name, value) -> None:
    with pytest.raises(ValidationError, match=name.lower()):
        settings(monkeypatch, tmp_path, **{name: value})


def test_the_auth_cache_time_reaches_the_api(monkeypatch, tmp_path) -> None:
    api = settings(monkeypatch, tmp_path, JWT_SECRET=SECRET,
                   API_AUTH_CACHE_S="0").api_config()
    assert api.auth_cache_s == 0
