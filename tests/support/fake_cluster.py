"""A Ray cluster on this machine whose worker nodes the Ray autoscaler itself launches and removes.

This is Ray's `AutoscalingCluster` (`ray.cluster_utils`): `ray start --head` with the fake
multi-node node provider, whose "nodes" are further sets of Ray processes on this machine, started
and stopped by the autoscaler exactly as it would start and stop cloud instances. Three things keep
the class from running as shipped, and are supplied here:

- it reads `ray/autoscaler/_private/fake_multi_node/example.yaml`, which the PyPI wheel lacks:
  `fake_multinode.yaml` beside this module stands in for it;
- its head takes the default GCS port, 6379, where a Redis may well be listening, and the fake
  provider then joins worker nodes to 6379 too: the head gets a free port on 127.0.0.1 and the
  provider is told that address (`gcs_address`);
- it runs whichever `ray` is first on PATH: the one beside this interpreter is used.

The nodes inherit the environment of `ray start`, so workers on every node import what the test
session's PYTHONPATH offers (the test agents among it). The cluster uses token auth (a token is
made in ~/.ray/auth_token if there is none), and drivers join with RAY_AUTH_MODE=token.

Like `AutoscalingCluster`, `start` and `shutdown` run `ray stop --force`, which stops every Ray
process on the machine, this session's own cluster included: only tests that run in a pytest
process of their own (marker `restarts_ray`) may use it.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml
from ray.cluster_utils import AutoscalingCluster

from cluster.ray_env import LOCAL_CLUSTER_ENV

BASE_CONFIG = Path(__file__).with_name("fake_multinode.yaml")
HEAD_NODE_TYPE = "ray.head.default"
START_TIMEOUT_S = 180


def _ray_command() -> str:
    beside = Path(sys.executable).with_name("ray")
    return str(beside) if beside.exists() else shutil.which("ray") or "ray"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class FakeMultiNodeCluster(AutoscalingCluster):
    """A head with `head_cpus` CPUs and the autoscaler free to add nodes of `worker_node_types`
    (autoscaler node types: {"name": {"resources": {...}, "node_config": {}, "min_workers": 0,
    "max_workers": n}}); a node idle for `idle_timeout_minutes` is removed again."""

    def __init__(self, head_cpus: int, worker_node_types: dict[str, Any],
                 idle_timeout_minutes: float) -> None:
        self.head_cpus = head_cpus
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self._config_dir: str | None = None
        super().__init__({"CPU": head_cpus}, worker_node_types,
                         idle_timeout_minutes=idle_timeout_minutes)

    def _generate_config(self, head_resources: dict[str, Any], worker_node_types: dict[str, Any],
                         autoscaler_v2: bool = False, **config_kwargs: Any) -> dict[str, Any]:
        config = yaml.safe_load(BASE_CONFIG.read_text())
        config["available_node_types"] = copy.deepcopy(worker_node_types)
        config["available_node_types"][HEAD_NODE_TYPE] = {
            "resources": dict(head_resources), "node_config": {}, "max_workers": 0}
        config["provider"]["gcs_address"] = self.address
        config.update(config_kwargs)
        return config

    def start(self) -> None:
        """Start the head (and with it the autoscaler, which checks demand every second);
        returns once the head is up."""
        self._stop_all()
        env = {**os.environ, **LOCAL_CLUSTER_ENV,
               "AUTOSCALER_UPDATE_INTERVAL_S": "1", "RAY_FAKE_CLUSTER": "1"}
        self._ensure_auth_token(env)
        self._config_dir = tempfile.mkdtemp(prefix="fake-multinode-")
        config_path = Path(self._config_dir) / "autoscaling.json"
        config_path.write_text(json.dumps(self._config))
        command = [_ray_command(), "start", "--head", f"--port={self.port}",
                   "--node-ip-address=127.0.0.1", f"--num-cpus={self.head_cpus}",
                   f"--autoscaling-config={config_path}", "--include-dashboard=false",
                   f"--ray-client-server-port={_free_port()}", "--disable-usage-stats"]
        result = subprocess.run(command, env=env, capture_output=True, text=True,
                                timeout=START_TIMEOUT_S)
        if result.returncode != 0:
            raise RuntimeError(f"`{' '.join(command)}` failed:\n{result.stderr or result.stdout}")

    def shutdown(self) -> None:
        """Stop every Ray process on the machine (the nodes the autoscaler started included)."""
        self._stop_all()
        if self._config_dir:
            shutil.rmtree(self._config_dir, ignore_errors=True)

    @staticmethod
    def _stop_all() -> None:
        subprocess.run([_ray_command(), "stop", "--force"], capture_output=True,
                       timeout=START_TIMEOUT_S, check=True)

    @staticmethod
    def _ensure_auth_token(env: dict[str, str]) -> None:
        if env.get("RAY_AUTH_TOKEN") or env.get("RAY_AUTH_TOKEN_PATH"):
            return
        if (Path.home() / ".ray" / "auth_token").exists():
            return
        subprocess.run([_ray_command(), "get-auth-token", "--generate"], env=env,
                       capture_output=True, check=True, timeout=60)
