"""Network namespaces that stand in for separate machines, for a multi-node SLURM cluster on one host.

One bridge on the host holds the subnet's first address; each node is a network namespace joined to the
bridge by a veth pair, whose namespace end is called `eth0` (so one GLOO_SOCKET_IFNAME serves every node)
and holds the node's own address. Processes started with `enter(i)` in front of their command line see only
that node's network, and share everything else (files, processes, munge's unix socket) with the host.

    network = NodeNetwork(2)
    network.up()          # NetworkError (a one-line reason) if it cannot; nothing is left behind then
    ... subprocess.Popen([*network.enter(0), "slurmd", ...]) ...
    network.down()        # idempotent; kills what still runs inside the namespaces first

Every name carries the owner's pid (`llv<pid>x<k>...`), so that `remove_stale()` can delete what a killed
test process left behind without touching anybody else's namespaces.
"""

from __future__ import annotations

import itertools
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

from tiers import require_installed, skip_privileged

NETNS_DIR = "/var/run/netns"
TOOLS = ("ip", "nsenter")
_STALE_NAME = re.compile(r"^llv(\d+)x\d+")
_counter = itertools.count()

# Run inside a namespace: listen on the node's address, print the port, keep the socket open until stdin
# closes (the kernel completes connections on a listening socket without accept()).
_LISTEN = (
    "import socket, sys; s = socket.socket(); s.bind((sys.argv[1], 0)); s.listen(16); "
    "print(s.getsockname()[1], flush=True); sys.stdin.read()"
)
# Run inside a namespace: connect to every HOST:PORT given, fail naming the first one that is unreachable.
_CONNECT = (
    "import socket, sys\n"
    "for target in sys.argv[1:]:\n"
    "    host, port = target.rsplit(':', 1)\n"
    "    try:\n"
    "        socket.create_connection((host, int(port)), timeout=5).close()\n"
    "    except OSError as error:\n"
    "        sys.exit(f'{target}: {error}')\n"
)


class NetworkError(RuntimeError):
    pass


def _path() -> str:
    return os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])


def require() -> None:
    """Returns where namespaces can be made here; otherwise stops the test (tests/tiers.py). Root first:
    without it nothing an install adds would let the test run, so it is a privileged tier's skip, in CI
    too. Then the tools, which .ci/setup_slurm.sh installs: a skip on a developer's machine, a failure in
    CI."""
    if os.geteuid() != 0:
        skip_privileged("network namespaces", f"they need root (the test runs as uid {os.geteuid()})")
    missing = [tool for tool in TOOLS if shutil.which(tool, path=_path()) is None]
    if missing:
        require_installed(
            "iproute2's ip and util-linux's nsenter", ".ci/setup_slurm.sh", f"{' and '.join(missing)} not found"
        )


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    ip = shutil.which("ip", path=_path())
    if ip is None:  # tearing down where nothing could have been made: nothing to do
        result = subprocess.CompletedProcess(["ip", *args], 127, "", "ip not found")
    else:
        result = subprocess.run([ip, *args], capture_output=True, text=True, timeout=30)
    if check and result.returncode != 0:
        raise NetworkError(f"ip {' '.join(args)} failed: {(result.stderr or result.stdout).strip()}")
    return result


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kill_all(pids: list[int], grace: float = 5.0) -> None:
    """SIGTERM, then SIGKILL what is still there after `grace` seconds."""
    pids = [pid for pid in pids if pid > 1 and pid != os.getpid()]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(_pid_alive(pid) and not _zombie(pid) for pid in pids):
            time.sleep(0.1)


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def _namespaces() -> list[str]:
    out = _ip("netns", "list", check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _links() -> list[str]:
    out = _ip("-o", "link", "show", check=False).stdout
    # "7: name@peer: <...>" -> name
    return [line.split(":", 2)[1].strip().split("@")[0] for line in out.splitlines() if ":" in line]


def remove_stale() -> list[str]:
    """Deletes namespaces and links named by this module whose owner process is gone; returns their names."""
    removed = []
    for name in _namespaces() + _links():
        match = _STALE_NAME.match(name)
        if match and not _pid_alive(int(match.group(1))):
            if name in _namespaces():
                _kill_all(_netns_pids(name))
                _ip("netns", "delete", name, check=False)
            else:
                _ip("link", "delete", name, check=False)
            removed.append(name)
    return removed


def _netns_pids(namespace: str) -> list[int]:
    out = _ip("netns", "pids", namespace, check=False).stdout
    return [int(pid) for pid in out.split() if pid.isdigit()]


def _free_subnet() -> str:
    """A 10.77.K.0/24 that no address or route of the host touches (returned as '10.77.K')."""
    used = _ip("-o", "-4", "addr", "show", check=False).stdout + _ip("-4", "route", "show", check=False).stdout
    candidates = list(range(256))
    random.shuffle(candidates)
    for k in candidates:
        if f"10.77.{k}." not in used and "10.77.0.0/16" not in used and "10.0.0.0/8" not in used:
            return f"10.77.{k}"
    raise NetworkError("no free 10.77.K.0/24 subnet for the node network")


class NodeNetwork:
    def __init__(self, nodes: int):
        if nodes < 1:
            raise ValueError(f"nodes must be at least 1, not {nodes}")
        self.prefix = f"llv{os.getpid()}x{next(_counter) % 100}"
        self.bridge = f"{self.prefix}br"
        self.namespaces = [f"{self.prefix}n{i + 1}" for i in range(nodes)]
        self.host_links = [f"{self.prefix}h{i + 1}" for i in range(nodes)]
        self.interface = "eth0"
        self.host_addr = ""
        self.node_addrs: list[str] = []

    def enter(self, node: int) -> list[str]:
        """The command-line prefix that runs a program in node `node`'s network (0-based).

        nsenter, not `ip netns exec`: the latter remounts /sys for the namespace without /sys/fs/cgroup,
        and slurmd then refuses to start."""
        return [shutil.which("nsenter", path=_path()) or "nsenter", f"--net={NETNS_DIR}/{self.namespaces[node]}"]

    def up(self) -> None:
        """Makes the bridge, the namespaces and their links; on any failure removes what it made and raises
        NetworkError."""
        try:
            remove_stale()
            subnet = _free_subnet()
            self.host_addr = f"{subnet}.1"
            self.node_addrs = [f"{subnet}.{i + 2}" for i in range(len(self.namespaces))]
            _ip("link", "add", self.bridge, "type", "bridge")
            _ip("addr", "add", f"{self.host_addr}/24", "dev", self.bridge)
            _ip("link", "set", self.bridge, "up")
            for namespace, host_link, addr in zip(self.namespaces, self.host_links, self.node_addrs):
                peer = f"{self.prefix}p{namespace[-1]}"
                _ip("netns", "add", namespace)
                _ip("link", "add", host_link, "type", "veth", "peer", "name", peer)
                _ip("link", "set", host_link, "master", self.bridge)
                _ip("link", "set", host_link, "up")
                _ip("link", "set", peer, "netns", namespace)
                _ip("-n", namespace, "link", "set", peer, "name", self.interface)
                _ip("-n", namespace, "addr", "add", f"{addr}/24", "dev", self.interface)
                _ip("-n", namespace, "link", "set", self.interface, "up")
                _ip("-n", namespace, "link", "set", "lo", "up")
            self._check_reachable()
        except BaseException as error:
            self.down()
            if isinstance(error, (NetworkError, subprocess.SubprocessError, OSError)):
                raise NetworkError(f"the node network could not be made: {error}") from error
            raise

    def down(self) -> None:
        """Kills whatever still runs in the namespaces, deletes them, their links and the bridge. Goes on
        past every failure; idempotent."""
        existing = _namespaces()
        for namespace in self.namespaces:
            if namespace in existing:
                _kill_all(_netns_pids(namespace))
                _ip("netns", "delete", namespace, check=False)
        links = _links()
        for link in [*self.host_links, self.bridge]:
            if link in links:
                _ip("link", "delete", link, check=False)

    def leftovers(self) -> list[str]:
        """Names of this network's namespaces and host links that still exist (empty after `down()`)."""
        existing = set(_namespaces()) | set(_links())
        return [name for name in [*self.namespaces, *self.host_links, self.bridge] if name in existing]

    def _check_reachable(self) -> None:
        """Every node reaches the host and every other node over TCP (a firewall on bridged traffic, for
        one, would stop it): better found here, in a line, than as a job that hangs."""
        host_listener = socket.socket()
        listeners = []
        try:
            host_listener.bind((self.host_addr, 0))
            host_listener.listen(16)
            targets = [f"{self.host_addr}:{host_listener.getsockname()[1]}"]
            for i, addr in enumerate(self.node_addrs):
                proc = subprocess.Popen(
                    [*self.enter(i), sys.executable, "-c", _LISTEN, addr],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                listeners.append(proc)
                port = proc.stdout.readline().strip()
                if not port.isdigit():
                    raise NetworkError(f"cannot listen on {addr} in {self.namespaces[i]}: {proc.stderr.read().strip()}")
                targets.append(f"{addr}:{port}")
            for i in range(len(self.namespaces)):
                result = subprocess.run(
                    [*self.enter(i), sys.executable, "-c", _CONNECT, *targets],
                    capture_output=True,
                    text=True,
                    timeout=60,
                )
                if result.returncode != 0:
                    raise NetworkError(f"node {i + 1} ({self.node_addrs[i]}) cannot reach {result.stderr.strip()}")
        finally:
            host_listener.close()
            for proc in listeners:
                proc.stdin.close()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
