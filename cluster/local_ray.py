"""Starting and stopping a local Ray head on loopback for `ymera up` / `ymera down`.

The head listens on 127.0.0.1 only, with token auth on (Ray's default for new clusters: the
token is written to ~/.ray/auth_token and other local processes connect with
RAY_AUTH_MODE=token), its GCS on `ray_port` (never 6379, which Redis holds), and the dashboard
on 127.0.0.1:`dashboard_port`. A marker in the state directory records the address of the head
`ymera up` started: drivers find the head there (`local_head_address`), and `ymera down` stops
only that head's processes, never another Ray cluster on the machine.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

from actors.errors import PlatformUnavailable
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
    return _answers("127.0.0.1", port)


def _answers(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        return probe.connect_ex((host, port)) == 0


def default_ray_address(state_dir: Path, port: int) -> str:
    """Where a driver given no address joins: inside a Ray job (or wherever Ray's own
    RAY_ADDRESS is set) that cluster ("auto"), else the local head (`local_head_address`)."""
    if os.environ.get("RAY_ADDRESS"):
        return "auto"
    return local_head_address(state_dir, port)


def local_head_address(state_dir: Path, port: int) -> str:
    """The address of the running local head: the one `ymera up` recorded in `state_dir`, else
    one listening on 127.0.0.1:`port`. Raises `PlatformUnavailable` at once when neither
    answers (joining an absent head makes Ray retry for a minute)."""
    marker = state_dir / MARKER
    recorded = marker.read_text().strip() if marker.exists() else ""
    for address in (recorded, f"127.0.0.1:{port}"):
        host, _, candidate_port = address.rpartition(":")
        if host and candidate_port.isdigit() and _answers(host, int(candidate_port)):
            return address
    raise PlatformUnavailable(
        f"no platform is running: no Ray head answers at {recorded or f'127.0.0.1:{port}'} "
        f"(state directory {state_dir}). Start one with `ymera up`, or set YMERA_RAY_ADDRESS "
        "(and YMERA_STATE_DIR if `ymera up` used another state directory)")


STARTUP_TIMED_OUT = "timed out during startup"
"""What `ray start` says when its GCS or raylet did not come up in time (a busy machine): the
one failure `start_head` tries again, once."""


def start_head(state_dir: Path, port: int, dashboard_port: int, num_cpus: int | None,
               metrics_port: int | None = None,
               resources: dict[str, float] | None = None) -> str:
    """Start a local head unless one already answers on `port`; returns its address. A start
    that fails is cleaned up (none of its processes are left); one that timed out during
    startup is tried once more."""
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
    for attempt in (1, 2):
        try:
            result = subprocess.run(command, env=ray_env(), capture_output=True, text=True,
                                    timeout=180)
        except subprocess.TimeoutExpired:
            _stop_processes(_head_processes(address))
            raise RuntimeError(f"`{' '.join(command)}` did not finish in 180 s") from None
        if result.returncode == 0:
            (state_dir / MARKER).write_text(address)
            return address
        # Leave nothing of a head that did not start: its GCS or dashboard would hold ports
        # that the next head (or a job server's agent) needs.
        _stop_processes(_head_processes(address))
        if attempt == 2 or STARTUP_TIMED_OUT not in (result.stderr + result.stdout):
            raise RuntimeError(f"`{' '.join(command)}` failed:\n{result.stderr or result.stdout}")
    raise AssertionError("unreachable")


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
    _stop_processes(_head_processes(marker.read_text().strip()))
    marker.unlink(missing_ok=True)
    return True


def _head_processes(address: str) -> list:
    """The processes of the head at `address` on this machine: its GCS server, the processes
    that name it as their GCS (raylet, dashboard, monitors), and all their children (workers,
    agents). Processes of other Ray clusters name another address."""
    import psutil

    port = address.rpartition(":")[2]
    own = {f"--gcs-address={address}", f"--gcs_server_port={port}"}
    roots = []
    for process in psutil.process_iter(["cmdline"]):
        if own.intersection(process.info["cmdline"] or ()):
            roots.append(process)
    found = {process.pid: process for process in roots}
    for root in roots:
        try:
            found.update((child.pid, child) for child in root.children(recursive=True))
        except psutil.Error:
            pass
    return list(found.values())


def _stop_processes(processes: list, grace_s: float = 15.0) -> None:
    """Terminate `processes`, then kill those still alive after `grace_s`."""
    import psutil

    for process in processes:
        try:
            process.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(processes, timeout=grace_s)
    for process in alive:
        try:
            process.kill()
        except psutil.Error:
            pass
