"""Scale-out over processes: ``driftline runner --replicas score=3,drift-check=2``.

Each replica is a ``driftline runner --functions NAME`` child process with the same bus
and store: replicas of a function join its consumer group (``driftline.<name>``), so Kafka
spreads the topic's partitions over them, and when one dies its partitions move to the
others at the committed offsets (nothing lost; what it had not committed is delivered
again, with the same derived output ids). The functions not named get one process
together. A child that exits on its own is started again, with a growing delay; SIGTERM
to the parent stops every child cleanly (each drains and commits).

A function has at most as many busy replicas as its topics have partitions
(``DRIFTLINE_PARTITIONS``, 3 by default): more replicas stand by.

On the embedded bus only ``driftline up`` has children, one process per named function:
it shares its bus file with them (:meth:`ReplicaSet.share`), and a consumer group cannot
span processes there. Every child stops (draining and committing) once its parent is gone;
one that shares an embedded bus is killed with it (Linux), so that a SIGKILLed ``up`` can be
started again at once on its home, as if its functions had run inside it.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial

from driftline.runtime.errors import ConfigError

log = logging.getLogger("driftline.replicas")

try:  # loaded here: the child's side of fork must not load libraries
    _LIBC: ctypes.CDLL | None = ctypes.CDLL(None) if sys.platform == "linux" else None
except OSError:
    _LIBC = None


def _before_exec(tied: bool, nice: int) -> None:
    """In the child, before exec, while it has one thread: if ``tied``, SIGKILL when the
    thread that started it exits (``prctl(PR_SET_PDEATHSIG)``; the replica set's thread
    lives as long as the parent); ``nice`` steps lower CPU priority, which every thread
    it starts inherits (Linux keeps a niceness per thread)."""
    if tied:
        assert _LIBC is not None
        _LIBC.prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG
    if nice:
        os.nice(nice)


# names the process a child runner stops with (driftline runner watches it)
PARENT_PID_ENV = "DRIFTLINE_PARENT_PID"
_MAX_BACKOFF_S = 30.0
_STOP_TIMEOUT_S = 60.0


def parse_replicas(text: str, known: Sequence[str]) -> dict[str, int]:
    """``score=3,drift-check=2`` as ``{"score": 3, "drift-check": 2}``; ConfigError says what is wrong."""
    counts: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        if not sep or not value.strip().isdigit() or int(value) < 1:
            raise ConfigError(
                f"--replicas {part!r}: write NAME=COUNT with COUNT >= 1, e.g. score=3"
            )
        if name.strip() not in known:
            raise ConfigError(
                f"--replicas: unknown function {name.strip()!r}; known: {sorted(known)}"
            )
        counts[name.strip()] = int(value)
    if not counts:
        raise ConfigError("--replicas: name at least one function, e.g. score=3,drift-check=2")
    return counts


def process_plan(functions: Sequence[str], replicas: dict[str, int]) -> list[list[str]]:
    """The functions of each child: ``replicas[f]`` processes for each named ``f``, one for the rest."""
    plan = [[name] for name in functions if name in replicas for _ in range(replicas[name])]
    rest = [name for name in functions if name not in replicas]
    return plan + ([rest] if rest else [])


@dataclass
class _Child:
    functions: list[str]
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    backoff_s: float = 1.0
    restart_at: float = 0.0
    restarts: int = field(default=0)


class ReplicaSet:
    """Runs and watches the child runner processes of one ``driftline runner --replicas``."""

    def __init__(
        self,
        plan: list[list[str]],
        common_args: Sequence[str],
        *,
        verbose: bool = False,
        python: str = sys.executable,
        refs: Mapping[str, str] | None = None,
        nice: Mapping[str, int] | None = None,
    ):
        """``refs``: how a child's ``--functions`` names each function (``./shop.py:tag``
        for a user function; a built-in's name by default). ``nice``: how much lower the
        CPU priority of a child running that function is (its niceness, set before it
        starts, so that every thread it starts has it)."""
        self.children = [_Child(functions) for functions in plan]
        self.refs = dict(refs or {})
        self.nice = dict(nice or {})
        self.common_args = list(common_args)
        self.verbose = verbose
        self.python = python
        self._pass_fds: tuple[int, ...] = ()
        self._env: dict[str, str] = {}
        self._stop = threading.Event()

    def share(self, fd: int, env: Mapping[str, str]) -> None:
        """Give every child this descriptor and these environment variables (an embedded
        bus's lock: :meth:`EmbeddedBus.share`); a child then dies with this process."""
        self._pass_fds = (fd,)
        self._env = dict(env)

    def command(self, functions: list[str]) -> list[str]:
        return [
            self.python,
            "-m",
            "driftline.runtime.cli",
            *(["-v"] if self.verbose else []),
            "runner",
            "--functions",
            ",".join(self.refs.get(f, f) for f in functions),
            *self.common_args,
        ]

    def pids(self) -> list[int]:
        """The pids of the children running now."""
        return [c.proc.pid for c in self.children if c.proc is not None and c.proc.poll() is None]

    def run(self) -> int:
        """Start the children and keep them running until :meth:`stop`; then stop them."""
        for child in self.children:
            self._spawn(child)
        while not self._stop.wait(0.5):
            for child in self.children:
                self._watch(child)
        return self._terminate()

    def stop(self) -> None:
        self._stop.set()

    def _spawn(self, child: _Child) -> None:
        env = {**os.environ, **self._env, PARENT_PID_ENV: str(os.getpid())}
        tied = bool(self._pass_fds) and _LIBC is not None
        nice = max((self.nice.get(f, 0) for f in child.functions), default=0)
        child.proc = subprocess.Popen(
            self.command(child.functions),
            env=env,
            pass_fds=self._pass_fds,
            preexec_fn=partial(_before_exec, tied, nice) if tied or nice else None,
        )
        child.started = time.monotonic()
        log.info("replica pid %d: %s", child.proc.pid, ",".join(child.functions))

    def _watch(self, child: _Child) -> None:
        now = time.monotonic()
        if child.proc is not None:
            code = child.proc.poll()
            if code is None:
                if now - child.started > 60:
                    child.backoff_s = 1.0  # it ran a while: the next crash restarts quickly again
                return
            log.warning(
                "replica pid %d (%s) exited with %d; restarting in %.0fs",
                child.proc.pid,
                ",".join(child.functions),
                code,
                child.backoff_s,
            )
            child.proc, child.restart_at = None, now + child.backoff_s
            child.backoff_s = min(child.backoff_s * 2, _MAX_BACKOFF_S)
        if now >= child.restart_at:
            child.restarts += 1
            self._spawn(child)

    def _terminate(self) -> int:
        live = [c.proc for c in self.children if c.proc is not None and c.proc.poll() is None]
        for proc in live:
            proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + _STOP_TIMEOUT_S
        failed = 0
        for proc in live:
            try:
                failed += proc.wait(max(0.1, deadline - time.monotonic())) != 0
            except subprocess.TimeoutExpired:
                log.warning(
                    "replica pid %d did not stop in %.0fs; killing it", proc.pid, _STOP_TIMEOUT_S
                )
                proc.kill()
                proc.wait()
                failed += 1
        return 1 if failed else 0
