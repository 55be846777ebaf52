"""Starting and stopping a local Ray head on loopback for `ymera up` / `ymera down`.

The head listens on 127.0.0.1 only, with token auth on (Ray's default for new clusters: the
token is written to ~/.ray/auth_token and other local processes connect with
RAY_AUTH_MODE=token), its GCS on `ray_port` (never 6379, which Redis holds), and the dashboard
on 127.0.0.1:`dashboard_port`. A marker in the state directory records that `ymera up`
started it, so `ymera down` stops only a cluster it started.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

from cluster.ray_env import LOCAL_CLUSTER_ENV

MARKER = "ray-head-started-by-ymera"


def ray_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(LOCAL_CLUSTER_ENV)
    return env


def _ray_command() -> list[str]:
    beside = Path(sys.executable).with_name("ray")
    return [str(beside)] if beside.exists() else [shutil.which("ray") or "ray"]


def head_is_running(port: int) -> bool:
    """Whether something already listens on the local GCS port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def start_head(state_dir: Path, port: int, dashboard_port: int, num_cpus: int | None,
               metrics_port: int | None = None,
               resources: dict[str, float] | None = None) -> str:
    """Start a local head unless one already answers on `port`; returns its address."""
    address = f"127.0.0.1:{port}"
    if head_is_running(port):
        return address
    _ensure_auth_token()
    command = [*_ray_command(), "start", "--head", f"--port={port}",
               "--node-ip-address=127.0.0.1", "--dashboard-host=127.0.0.1",
               f"--dashboard-port={dashboard_port}", "--disable-usage-stats"]
    if metrics_port:
        command.append(f"--metrics-export-port={metrics_port}")
    if num_cpus:
        command.append(f"--num-cpus={num_cpus}")
    if resources:
        command.append(f"--resources={json.dumps(resources)}")
    result = subprocess.run(command, env=ray_env(), capture_output=True, text=True, timeout=180)
    if result.returncode != 0:
        raise RuntimeError(f"`{' '.join(command)}` failed:\n{result.stderr or result.stdout}")
    (state_dir / MARKER).write_text(address)
    return address


def _ensure_auth_token() -> None:
    """Make the token a new token-auth cluster needs, unless one is given or saved already.
    (`ray start` makes one itself only when RAY_AUTH_MODE is unset, and `ymera` sets it.)"""
    if os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH"):
        return
    if (Path.home() / ".ray" / "auth_token").exists():
        return
    subprocess.run([*_ray_command(), "get-auth-token", "--generate"], env=ray_env(),
                   capture_output=True, check=True, timeout=60)


def stop_head(state_dir: Path) -> bool:
    """Stop the local head if `ymera up` started it. Returns whether it did."""
    marker = state_dir / MARKER
    if not marker.exists():
        return False
    subprocess.run([*_ray_command(), "stop"], env=ray_env(), capture_output=True, timeout=180)
    marker.unlink(missing_ok=True)
    return True
