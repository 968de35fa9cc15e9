"""A real Ray cluster on 127.0.0.1 for the tests: a head and worker nodes, each a
``ray start --block`` process with one CPU in its own session, stopped by the tests.

Each node is stopped through the process that started it (SIGTERM makes ``ray start --block``
stop the node's daemons), then its whole process group is killed; nothing is stopped by
name, so other Ray clusters on the machine are left alone."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.processes import rag_environment
from tests.servers import free_port

START_TIMEOUT = 180.0


def ray_executable() -> str:
    return str(Path(sys.executable).with_name("ray"))


class RayCluster:
    """``with RayCluster(workers=1) as cluster: ... cluster.address ...``"""

    def __init__(self, workers: int = 1):
        self.workers = workers
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.temp_dir = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: Ray's socket paths must fit
        self.nodes: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []

    def __enter__(self) -> RayCluster:
        try:
            self._start("--head", "--node-ip-address", "127.0.0.1", "--port", str(self.port),
                        "--include-dashboard=false", "--temp-dir", self.temp_dir)
            self.wait_for_nodes(1)
            for _ in range(self.workers):
                self._start("--address", self.address, "--node-ip-address", "127.0.0.1")
            self.wait_for_nodes(1 + self.workers)
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _start(self, *args: str) -> None:
        log = Path(self.temp_dir) / f"node-{len(self.nodes)}.log"
        self.logs.append(log)
        with open(log, "wb") as out:
            self.nodes.append(subprocess.Popen(
                [ray_executable(), "start", "--block", "--num-cpus", "1", "--disable-usage-stats",
                 "--dashboard-agent-listen-port", str(free_port()), *args],
                stdout=out, stderr=subprocess.STDOUT, env=rag_environment(), start_new_session=True,
            ))

    def alive_nodes(self) -> int:
        result = subprocess.run([ray_executable(), "status", "--address", self.address], capture_output=True,
                                text=True, timeout=60, env=rag_environment())
        active = result.stdout.split("Active:", 1)[-1].split("Pending:", 1)[0]
        return sum(1 for line in active.splitlines() if line.strip().startswith("1 node_"))

    def wait_for_nodes(self, count: int) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if any(node.poll() is not None for node in self.nodes):
                raise RuntimeError("a Ray node exited at start:\n" + self.logs[-1].read_text(errors="replace"))
            if self.alive_nodes() == count:
                return
            time.sleep(1)
        raise RuntimeError(f"the Ray cluster did not reach {count} nodes in {START_TIMEOUT:.0f} s")

    def worker_pids(self) -> set[int]:
        """The processes of the worker nodes: their daemons and the Ray workers those started."""
        return _node_processes({node.pid for node in self.nodes[1:]})

    def kill_worker_nodes(self) -> None:
        """SIGKILL every process of the worker nodes, as if their machine had failed."""
        _kill(self.worker_pids())

    def stop(self) -> None:
        """SIGTERM to every node, then, after a few seconds (a node drains for up to 30 s),
        SIGKILL to whatever of them is left; the cluster's temporary directory goes too."""
        processes = _node_processes({node.pid for node in self.nodes})
        for node in self.nodes:
            if node.poll() is None:
                node.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 5
        for node in self.nodes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                node.wait(timeout=max(0.1, deadline - time.monotonic()))
        _kill(processes | _node_processes({node.pid for node in self.nodes}))
        for node in self.nodes:
            node.wait()
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def _stat(pid: str) -> list[str]:
    return (Path("/proc") / pid / "stat").read_text().rsplit(")", 1)[1].split()


def _node_processes(leaders: set[int]) -> set[int]:
    """The processes in the sessions of these ``ray start`` processes (a node's daemons) and
    their children (Ray workers, which a raylet starts in sessions of their own)."""
    table: dict[int, tuple[int, int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                fields = _stat(entry.name)
                table[int(entry.name)] = (int(fields[1]), int(fields[2]))  # parent, process group
    daemons = {pid for pid, (_, group) in table.items() if group in leaders}
    return daemons | {pid for pid, (parent, _) in table.items() if parent in daemons}


def _kill(pids: set[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
