"""A private one-node SLURM cluster for tests: munged, slurmctld and slurmd on loopback.

Everything the cluster owns lives in one temporary folder: slurm.conf, the munge key, munge's socket,
the state and spool folders, pid and log files. Its ports are free ports picked at start, its munge
socket is private, and every client command the test runs gets `SLURM_CONF` pointing at its own
slurm.conf through `cluster.env`, so it never touches (nor is touched by) a system SLURM.

    with SlurmCluster() as cluster:          # tiers.require_installed where it cannot start
        result = cluster.run(["sbatch", "--wait", "job.sh"], timeout=300)

SLURM missing or failing to start is setup .ci/setup_slurm.sh installs: a skip saying why on a developer's
machine, a failure in CI (tests/tiers.py).

With `nodes=N` (N > 1) it has N nodes, n1..nN, each a slurmd in its own network namespace with its own
address (tests/node_namespaces.py: root, `ip` and `nsenter` needed; without root, or where the kernel
refuses the namespaces, the test skips as a privileged tier, in CI too);
munged and slurmctld stay on the host, which is the bridge's first address. The namespaces share the host's
name, so that name means the host's loopback on every node: only NodeAddr tells the nodes apart.

Stopping cancels the cluster's jobs, stops each daemon by its pid file (SIGTERM, then SIGKILL), and
finally kills any process still carrying this cluster's `SLURM_CONF` in its environment (job steps,
slurmstepd), by pid, so that no daemon or job outlives the test.
"""

from __future__ import annotations

import getpass
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import node_namespaces
from tiers import require_installed, skip_privileged

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sinfo", "sbatch", "scontrol", "scancel", "squeue", "srun")
SLURM = "SLURM and munge"
INSTALLER = ".ci/setup_slurm.sh, or apt-get install slurm-wlm munge"


def missing_programs() -> list[str]:
    """The SLURM and munge programs that are not on PATH (daemons live in /usr/sbin)."""
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    return [name for name in DAEMONS + CLIENTS if shutil.which(name, path=path) is None]


def _which(name: str) -> str:
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    found = shutil.which(name, path=path)
    if found is None:
        raise FileNotFoundError(name)
    return found


def _free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _first_job_id(jobs: int = 32) -> int:
    """A first job id for a new cluster whose next `jobs` ids give rendezvous ports that are free now.
    train_italian_video.sh takes its port from the job id (20000 + id % 20000): clusters of tests running
    side by side would otherwise all start at job 1 and their jobs would ask for the same port."""
    rng = random.SystemRandom()
    for _ in range(100):
        first = rng.randrange(1, 20000 - jobs)
        if _ports_free(range(20000 + first, 20000 + first + jobs)):
            return first
    raise RuntimeError("no run of free ports above 20000 for the test cluster's jobs")


def _ports_free(ports) -> bool:
    for port in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def _node_hardware() -> str:
    """`CPUs=.. Boards=.. ... RealMemory=..` as slurmd itself sees this machine, so the node is not drained
    for claiming more than it has. Memory is declared a little below what is there."""
    fields = {}
    try:
        out = subprocess.run([_which("slurmd"), "-C"], capture_output=True, text=True, timeout=30).stdout
        for token in out.split():
            key, _, value = token.partition("=")
            if key in ("CPUs", "Boards", "SocketsPerBoard", "CoresPerSocket", "ThreadsPerCore", "RealMemory"):
                fields[key] = value
    except (OSError, subprocess.SubprocessError):
        pass
    if "CPUs" not in fields:
        return f"CPUs={os.cpu_count() or 1} RealMemory=1000"
    fields["RealMemory"] = str(max(100, int(int(fields.get("RealMemory", "1100")) * 0.9)))
    return " ".join(f"{k}={v}" for k, v in fields.items())


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child of ours counts as gone
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _terminate(pid: int, grace: float = 10.0) -> None:
    """SIGTERM, wait up to `grace` seconds, then SIGKILL."""
    if pid <= 1 or pid == os.getpid() or not _alive(pid):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not _alive(pid):
            return
        time.sleep(0.1)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.1)


class SlurmCluster:
    """Starts on `start()` (or entering a `with` block), stops on `stop()` (or leaving it)."""

    def __init__(
        self,
        root: str | os.PathLike | None = None,
        start_timeout: float = 60.0,
        keep_files: bool = False,
        nodes: int = 1,
    ):
        if nodes < 1:
            raise ValueError(f"SlurmCluster: nodes must be at least 1, not {nodes}")
        self.start_timeout = start_timeout
        self.keep_files = keep_files
        # A short folder: munge's socket path must fit a unix socket's 108 bytes.
        self._own_root = root is None
        self.root = Path(tempfile.mkdtemp(prefix="slurm-")) if root is None else Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.conf = self.root / "slurm.conf"
        self.munge_socket = self.root / "munge.sock"
        self.munge_key = self.root / "munge.key"
        # one node keeps the names it always had; several are n1..nN, each in its own network namespace
        self.node_names = ["localhost"] if nodes == 1 else [f"n{i + 1}" for i in range(nodes)]
        self.network = node_namespaces.NodeNetwork(nodes) if nodes > 1 else None
        labels = ["munged", "slurmctld"] + (["slurmd"] if nodes == 1 else [f"slurmd-{n}" for n in self.node_names])
        self.pid_files = {label: self.root / f"{label}.pid" for label in labels}
        self.logs = {label: self.root / f"{label}.log" for label in labels}
        self.env = dict(os.environ)
        self.env["SLURM_CONF"] = str(self.conf)
        self.env["PATH"] = os.pathsep.join([self.env.get("PATH", ""), "/usr/sbin", "/sbin"])
        # a test must not inherit the allocation it may itself be running in
        for key in list(self.env):
            if key.startswith(("SLURM_", "SBATCH_", "SRUN_", "SALLOC_")) and key != "SLURM_CONF":
                del self.env[key]
        self._procs: dict[str, subprocess.Popen] = {}
        self.started = False

    # -- life cycle ---------------------------------------------------------------------------------
    def __enter__(self) -> SlurmCluster:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        """Starts the three daemons and waits until the node is idle. On any failure it stops what it
        started, then: SLURM missing or not starting is tiers.require_installed (a skip, a failure in CI);
        network namespaces refused is tiers.skip_privileged."""
        missing = missing_programs()
        if missing:
            self.stop()
            require_installed(SLURM, INSTALLER, f"not installed: {', '.join(missing)} not found")
        try:
            if self.network is not None:
                node_namespaces.require()
                try:
                    self.network.up()
                except node_namespaces.NetworkError as error:
                    # root, and the tools are there: the kernel or the container refused (no CAP_NET_ADMIN)
                    skip_privileged("network namespaces", f"a {len(self.node_names)}-node cluster: {error}")
            self._write_files()
            self._start_munged()
            self._start_slurm()
            self._wait_idle()
        except _StartError as error:
            logs = "\n".join(f"--- {name}.log ---\n{_tail(path)}" for name, path in self.logs.items())
            self.stop()
            require_installed(SLURM, INSTALLER, f"the local SLURM cluster could not start: {error}\n{logs}")
        except BaseException:
            self.stop()
            raise
        self.started = True

    def stop(self) -> None:
        """Cancels jobs, stops slurmd, slurmctld and munged by pid file, kills leftovers; idempotent."""
        try:
            if self._procs.get("slurmctld") is not None and _alive(self._procs["slurmctld"].pid):
                self.run(["scancel", "--full", "--user", getpass.getuser()], timeout=15, check=False)
                deadline = time.monotonic() + 15
                while time.monotonic() < deadline:
                    queue = self.run(["squeue", "-h", "-o", "%i"], timeout=10, check=False)
                    if queue.returncode != 0 or not queue.stdout.strip():
                        break
                    time.sleep(0.5)
        except Exception:  # noqa: BLE001 - stopping must go on whatever the cluster says
            pass
        finally:
            for name in reversed(list(self.pid_files)):  # the slurmd daemons, slurmctld, munged
                for pid in self._daemon_pids(name):
                    _terminate(pid)
                proc = self._procs.pop(name, None)
                if proc is not None:
                    try:
                        proc.wait(timeout=5)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait(timeout=5)
            for pid in self.leftover_pids():
                _terminate(pid, grace=3)
            if self.network is not None:
                self.network.down()  # after the daemons: it kills whatever still runs inside
            self.started = False
            if self._own_root and not self.keep_files:
                shutil.rmtree(self.root, ignore_errors=True)

    # -- helpers for tests ----------------------------------------------------------------------------
    def run(self, args: list[str], timeout: float = 60, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
        """Runs a SLURM client command against this cluster."""
        kwargs.setdefault("env", self.env)
        result = subprocess.run([_which(args[0]), *args[1:]], capture_output=True, text=True, timeout=timeout, **kwargs)
        if check and result.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed ({result.returncode}): {result.stdout}{result.stderr}")
        return result

    def job_info(self, job_id: str) -> dict[str, str]:
        """`scontrol show job` as a dict (JobState, ExitCode, StdOut, ...)."""
        out = self.run(["scontrol", "show", "job", "-o", str(job_id)], check=False).stdout
        info = {}
        for token in out.split():
            key, sep, value = token.partition("=")
            if sep:
                info[key] = value
        return info

    def leftover_pids(self) -> list[int]:
        """Processes (other than this one) whose environment holds this cluster's SLURM_CONF: the
        daemons, slurmstepd and job steps it started."""
        marker = f"SLURM_CONF={self.conf}".encode()
        pids = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == os.getpid():
                continue
            try:
                with open(f"/proc/{entry}/environ", "rb") as f:
                    if marker in f.read().split(b"\0"):
                        pids.append(int(entry))
            except OSError:
                continue
        return [pid for pid in pids if _alive(pid)]

    def daemon_log_tails(self, lines: int = 20) -> str:
        return "\n".join(f"--- {name}.log ---\n{_tail(path, lines)}" for name, path in self.logs.items())

    # -- internals ------------------------------------------------------------------------------------
    def _daemon_pids(self, name: str) -> list[int]:
        pids = []
        try:
            pids.append(int(self.pid_files[name].read_text().split()[0]))
        except (OSError, ValueError, IndexError):
            pass
        proc = self._procs.get(name)
        if proc is not None and proc.pid not in pids:
            pids.append(proc.pid)
        return pids

    def _write_files(self) -> None:
        spools = ["spool"] if self.network is None else [f"spool-{n}" for n in self.node_names]
        for sub in ("state", *spools):
            (self.root / sub).mkdir(exist_ok=True)
        os.chmod(self.root, 0o700)
        self.munge_key.write_bytes(os.urandom(1024))
        os.chmod(self.munge_key, 0o400)
        user = getpass.getuser()
        ctld_port, slurmd_port = _free_ports(2)
        r = self.root
        hardware = _node_hardware()
        if self.network is None:
            controller = "localhost"
            node_files = {"spool": f"{r}/spool", "pid": self.pid_files["slurmd"], "log": self.logs["slurmd"]}
            node_lines = f"NodeName=localhost {hardware} State=UNKNOWN"
        else:
            # the host as the nodes reach it; each slurmd fills in its own node name (%n)
            controller = f"localhost({self.network.host_addr})"
            node_files = {"spool": f"{r}/spool-%n", "pid": f"{r}/slurmd-%n.pid", "log": f"{r}/slurmd-%n.log"}
            node_lines = "\n".join(
                f"NodeName={name} NodeAddr={addr} {hardware} State=UNKNOWN"
                for name, addr in zip(self.node_names, self.network.node_addrs)
            )
        self.conf.write_text(
            f"""# private test cluster of {len(self.node_names)} node(s) (tests/slurm_cluster.py)
ClusterName=llavatest
SlurmctldHost={controller}
SlurmUser={user}
SlurmdUser={user}
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
FirstJobId={_first_job_id()}
AuthType=auth/munge
CredType=cred/munge
# a requeued job waits cred_expire + 1 s before it may start again (default 120 s; 5 is the least allowed)
AuthInfo=socket={self.munge_socket},cred_expire=10
StateSaveLocation={r}/state
SlurmdSpoolDir={node_files["spool"]}
SlurmctldPidFile={self.pid_files["slurmctld"]}
SlurmdPidFile={node_files["pid"]}
SlurmctldLogFile={self.logs["slurmctld"]}
SlurmdLogFile={node_files["log"]}
PlugStackConfig={r}/plugstack.conf
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
MailProg=/bin/true
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
# `sbatch --wait` polls every 2 s, growing its interval only while it is under MinJobAge/2: keep it at 2 s
MinJobAge=4
# the main scheduler every 2 s (default 60), so that a requeued job starts once it may, not a minute later
SchedulerParameters=sched_interval=2
{node_lines}
PartitionName=debug Nodes={",".join(self.node_names)} Default=YES MaxTime=INFINITE State=UP
"""
        )
        (self.root / "plugstack.conf").write_text("")

    def _popen(self, name: str, args: list[str]) -> subprocess.Popen:
        # the daemon keeps its own copy of the file descriptor: ours is closed once it has started
        with open(self.root / f"{name}.stdout", "ab") as log:
            proc = subprocess.Popen(
                args,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                cwd=self.root,
            )
        self._procs[name] = proc
        return proc

    def _wait_for(self, what: str, ready, proc: subprocess.Popen, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ready():
                return
            if proc.poll() is not None:
                out = _tail(self.root / f"{proc.args[0].rsplit('/', 1)[-1]}.stdout")
                raise _StartError(f"{what} exited with status {proc.returncode}: {out}")
            time.sleep(0.1)
        raise _StartError(f"{what} did not come up within {timeout:.0f} s")

    def _start_munged(self) -> None:
        # --force: as root, and with the socket in a temporary folder, munged would otherwise refuse.
        proc = self._popen(
            "munged",
            [
                _which("munged"),
                "--foreground",
                "--force",
                f"--socket={self.munge_socket}",
                f"--key-file={self.munge_key}",
                f"--pid-file={self.pid_files['munged']}",
                f"--log-file={self.logs['munged']}",
                f"--seed-file={self.root / 'munge.seed'}",
            ],
        )
        self._wait_for("munged", self.munge_socket.exists, proc)

        def credential_round_trip() -> bool:
            munge = subprocess.run(
                [_which("munge"), "-n", "-S", str(self.munge_socket)], capture_output=True, timeout=10
            )
            if munge.returncode != 0:
                return False
            unmunge = subprocess.run(
                [_which("unmunge"), "-S", str(self.munge_socket)], input=munge.stdout, capture_output=True, timeout=10
            )
            return unmunge.returncode == 0

        if shutil.which("munge") and shutil.which("unmunge"):
            self._wait_for("a munge credential round trip", credential_round_trip, proc, timeout=10)

    def _start_slurm(self) -> None:
        ctld = self._popen("slurmctld", [_which("slurmctld"), "-D", "-i", "-f", str(self.conf)])
        self._wait_for(
            "slurmctld",
            lambda: self.run(["scontrol", "ping"], timeout=10, check=False).stdout.count("UP") > 0,
            ctld,
            timeout=self.start_timeout / 2,
        )
        if self.network is None:
            self._popen("slurmd", [_which("slurmd"), "-D", "-f", str(self.conf), "-N", "localhost"])
            return
        for i, name in enumerate(self.node_names):
            slurmd = [_which("slurmd"), "-D", "-f", str(self.conf), "-N", name]
            self._popen(f"slurmd-{name}", [*self.network.enter(i), *slurmd])

    def _wait_idle(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        state = ""
        while time.monotonic() < deadline:
            for name, proc in self._procs.items():
                if proc.poll() is not None:
                    raise _StartError(f"{name} exited with status {proc.returncode}")
            # one line per node
            result = self.run(["sinfo", "-h", "-N", "-o", "%T"], timeout=10, check=False)
            state = result.stdout.strip()
            if state.split() == ["idle"] * len(self.node_names):
                return
            time.sleep(0.2)
        raise _StartError(
            f"the nodes did not become idle within {self.start_timeout:.0f} s (sinfo says {' '.join(state.split())!r})"
        )


class _StartError(RuntimeError):
    pass
