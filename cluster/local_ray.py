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
import time
from pathlib import Path

from actors.errors import PlatformUnavailable
from storage.errors import InvalidRequest
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
    _refuse_ports_in_use({"YMERA_DASHBOARD_PORT": dashboard_port,
                          "YMERA_RAY_METRICS_PORT": metrics_port})
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
        began = time.time()
        try:
            result = subprocess.run(command, env=ray_env(), capture_output=True, text=True,
                                    timeout=180)
        except subprocess.TimeoutExpired:
            _stop_head_at(address)
            raise RuntimeError(f"`{' '.join(command)}` did not finish in 180 s") from None
        if result.returncode == 0:
            (state_dir / MARKER).write_text(address)
            return address
        # Leave nothing of a head that did not start: its GCS or dashboard would hold ports
        # that the next head (or a job server's agent) needs.
        _stop_head_at(address)
        if attempt == 2 or STARTUP_TIMED_OUT not in (result.stderr + result.stdout):
            raise RuntimeError(f"`{' '.join(command)}` failed:\n{result.stderr or result.stdout}"
                               + startup_logs(began))
    raise AssertionError("unreachable")


def _refuse_ports_in_use(ports: dict[str, int | None]) -> None:
    """Raise `InvalidRequest` naming the setting when one of `ports` is taken: Ray's metrics
    agent cannot bind a port in use, and its raylet then dies with it, so `ray start` would
    only say, 30 s later, that the node "timed out during startup"."""
    for setting, port in ports.items():
        if port and not port_is_free(port):
            raise InvalidRequest(
                f"port {port} ({setting}) is in use{_holder(port)}: a Ray head started on it "
                f"cannot come up. Set {setting} to a free port, or stop what holds it",
                {"field": setting, "port": port})


def port_is_free(port: int) -> bool:
    """Whether a listener could bind `port` on every interface (as Ray's agents do); a
    connection lingering in TIME_WAIT does not count as taking it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def _holder(port: int) -> str:
    """" by <name> (pid N)" for the process listening on `port`, when this user may see it."""
    import psutil

    try:
        for connection in psutil.net_connections("tcp"):
            if (connection.status == psutil.CONN_LISTEN and connection.laddr
                    and connection.laddr.port == port and connection.pid):
                return f" by {psutil.Process(connection.pid).name()} (pid {connection.pid})"
    except (psutil.Error, OSError):
        pass
    return ""


STARTUP_LOGS = ("raylet.out", "raylet.err", "gcs_server.out", "gcs_server.err",
                "dashboard_agent.log")


def startup_logs(since: float, tail_chars: int = 1500) -> str:
    """The ends of the logs of the Ray session that started after `since` (Unix time): what a
    head that did not come up said about why (`ray start` itself only says it timed out)."""
    from ray._common.utils import get_default_ray_temp_dir

    root = Path(get_default_ray_temp_dir())
    try:
        sessions = [d for d in root.glob("session_2*") if d.stat().st_mtime >= since - 1]
    except OSError:
        return ""
    if not sessions:
        return ""
    logs = max(sessions, key=lambda d: d.stat().st_mtime) / "logs"
    parts = []
    for name in STARTUP_LOGS:
        try:
            text = (logs / name).read_text(errors="replace").strip()
        except OSError:
            continue
        if text:
            parts.append(f"--- {logs / name} (end) ---\n{text[-tail_chars:]}")
    return "\n" + "\n".join(parts) if parts else ""


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
    _stop_head_at(marker.read_text().strip())
    marker.unlink(missing_ok=True)
    return True


def _stop_head_at(address: str) -> None:
    """Stop the head at `address`, and forget it where `ray start` recorded it as the
    machine's current cluster (as `ray stop` does): Ray resolves "auto" there, and so does
    its job supervisor when it picks the address a job's driver joins, so a stale record
    sends the jobs of a later cluster on this machine to a head that is gone."""
    _stop_processes(_head_processes(address))
    from ray._common.utils import get_ray_address_file

    recorded = Path(get_ray_address_file(None))
    try:
        if recorded.read_text().strip() == address:
            recorded.unlink()
    except OSError:
        pass


def _head_processes(address: str) -> list:
    """The processes of the head at `address` on this machine: its GCS server, the processes
    that name it as their GCS (raylet, dashboard, monitors) or their cluster (the Ray Client
    server), and all their children (workers, agents). Processes of other Ray clusters name
    another address."""
    import psutil

    port = address.rpartition(":")[2]
    # The Ray Client server `ray start --head` runs names the head by `--address`.
    own = {f"--gcs-address={address}", f"--gcs_server_port={port}", f"--address={address}"}
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
