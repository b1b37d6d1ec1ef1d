"""Several ``reconguard audit`` processes on one output directory: they split the work.

The concurrency model:

- **Preparation under a file lock.** Building the built-in data, training the config's ``train:``
  models and creating the database happen while the process holds an exclusive ``flock`` on
  ``OUTPUT/.audit.lock`` (:func:`preparation_lock`); a second process waits (saying which process
  it waits for), then finds the data built and the models trained. The kernel drops the lock of
  a process that dies, even by SIGKILL.
- **Claimed units.** A worker *claims* its next units inside one ``BEGIN IMMEDIATE`` transaction
  (:func:`claim`): it reads which units are done and which are claimed, and writes a claim row
  (owner, host, pid, lease expiry) for the first free units in plan order. A claim whose lease
  has expired, or whose process is gone (same host, pid no longer running), is free again, so a
  killed worker's units are picked up by the others -- at once on the same host, after the lease
  (:data:`LEASE_SECONDS`) elsewhere. A live worker renews its leases from a background thread
  (:class:`Heartbeat`).
- **Idempotent commits.** A unit's records are written in one transaction that first checks the
  unit is not done (:meth:`reconguard.audit.store.Store.commit_unit`); if a worker was wrongly
  presumed dead and its unit computed twice, the second commit writes nothing. Units are
  deterministic, so whoever computes one writes the same numbers: the database equals a
  single-process run's.
- **One machine.** SQLite's locks (and ``flock``) are only sound on a local filesystem; an
  output directory on NFS, SMB, Lustre... gets a :class:`NetworkFilesystemWarning`. Multi-machine
  audits run under ``torchrun``, where rank 0 is the only process that touches the database
  (it claims units for the whole job).
"""

from __future__ import annotations

import fcntl
import os
import platform
import secrets
import sys
import threading
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

from reconguard.audit.store import Store

#: Seconds a claim stays valid without renewal (a worker on another host that dies is taken over after this).
LEASE_SECONDS = 120.0
LOCK_FILE = ".audit.lock"
_NETWORK_FILESYSTEMS = ("nfs", "nfs4", "cifs", "smb3", "smbfs", "afs", "ncpfs", "lustre", "gpfs", "beegfs",
                        "glusterfs", "ceph", "9p", "fuse.sshfs", "fuse.s3fs", "fuse.gcsfuse", "davfs")


class NetworkFilesystemWarning(UserWarning):
    """The audit's output directory is on a network filesystem, where SQLite locking is unreliable."""


@dataclass(frozen=True)
class Worker:
    """One audit process: the owner of its claims."""

    host: str = field(default_factory=platform.node)
    pid: int = field(default_factory=os.getpid)
    token: str = field(default_factory=lambda: secrets.token_hex(4))

    @property
    def owner(self) -> str:
        """``host:pid:token`` (the token tells a reused pid from the process that held it)."""
        return f"{self.host}:{self.pid}:{self.token}"


@dataclass(frozen=True)
class Claimed:
    """What :func:`claim` found.

    Attributes:
        units: The ``(cell_id, batch)`` now claimed by the caller, in plan order.
        done: Units of the plan that are finished (by anyone).
        busy: Units of the plan claimed by other live workers (wait for them, they may die).
    """

    units: tuple[tuple[str, int], ...]
    done: int
    busy: int


def claim(store: Store, plan: Sequence[tuple[str, int]], count: int, worker: Worker,
          lease: float = LEASE_SECONDS) -> Claimed:
    """Claim up to ``count`` units of ``plan`` that are neither done nor held by a live worker.

    Args:
        store: The audit's database.
        plan: Every unit of the audit, ``(cell_id, batch)``, in the order to compute them.
        count: How many to claim (the size of a torchrun job; 1 for a plain process).
        worker: The claiming process.
        lease: Seconds until the claims expire unless renewed.
    """
    with store.transaction() as db:
        done = {(c, int(b)) for c, b in db.execute("SELECT cell_id, batch FROM units")}
        held = {(c, int(b)): (owner, host, int(pid), float(expires))
                for c, b, owner, host, pid, expires in db.execute("SELECT * FROM claims")}
        now, chosen, busy = time.time(), [], 0
        for unit in plan:
            if unit in done:
                continue
            holder = held.get(unit)
            if holder is not None and holder[0] != worker.owner and _alive(*holder[1:], now, worker.host):
                busy += 1
            elif len(chosen) < count:
                chosen.append(unit)
        db.executemany("INSERT OR REPLACE INTO claims VALUES (?, ?, ?, ?, ?, ?)",
                       [(c, b, worker.owner, worker.host, worker.pid, now + lease) for c, b in chosen])
    return Claimed(tuple(chosen), sum(1 for unit in plan if unit in done), busy)


def next_units(store: Store, plan: Sequence[tuple[str, int]], count: int, worker: Worker,
               lease: float = LEASE_SECONDS, progress: Any = None, poll: float = 0.5) -> list[tuple[str, int]]:
    """The next units to compute: claimed ones, or ``[]`` once every unit of ``plan`` is done.

    While the only units left are claimed by other live workers, this waits (polling every ``poll``
    seconds): one of them may die, and its units are then claimed here.

    Args:
        store, plan, count, worker, lease: As for :func:`claim`.
        progress: A tqdm bar whose count is set to the units done (by any process).
        poll: Seconds between two looks while waiting.
    """
    while True:
        found = claim(store, plan, count, worker, lease)
        if progress is not None:
            progress.n = found.done
            progress.refresh()
        if found.units or not found.busy:
            return list(found.units)
        time.sleep(poll)


def renew(store: Store, worker: Worker, lease: float = LEASE_SECONDS) -> None:
    """Extend the leases of every claim ``worker`` holds."""
    with store.transaction() as db:
        db.execute("UPDATE claims SET expires = ? WHERE owner = ?", (time.time() + lease, worker.owner))


def release(store: Store, worker: Worker) -> None:
    """Drop every claim ``worker`` holds (its units become free for the others)."""
    with store.transaction() as db:
        db.execute("DELETE FROM claims WHERE owner = ?", (worker.owner,))


def _alive(host: str, pid: int, expires: float, now: float, my_host: str) -> bool:
    """Whether a claim still binds: its lease runs and, on this host, its process exists."""
    if expires <= now:
        return False
    return host != my_host or process_exists(pid)


def process_exists(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine (a zombie -- killed, not yet reaped -- does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True  # no /proc (macOS): trust kill(0)
    return state not in ("Z", "X")


class Heartbeat:
    """Renew a worker's leases every ``lease / 4`` seconds from a daemon thread, while in a ``with`` block."""

    def __init__(self, store: Store, worker: Worker, lease: float = LEASE_SECONDS):
        self.store, self.worker, self.lease = store, worker, lease
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="reconguard-lease", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.lease / 4):
            try:
                renew(self.store, self.worker, self.lease)
            except Exception:  # noqa: BLE001 -- a missed renewal only shortens the lease; the next one retries
                continue

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        release(self.store, self.worker)


@contextmanager
def preparation_lock(output: Path, *, announce: bool = True, doing: str = "preparing") -> Iterator[None]:
    """Hold the exclusive lock of ``output`` (waiting for another audit process that holds it).

    The holder's pid and host are written into the lock file, so the waiting one can name it.

    Args:
        output: The audit's output directory (created if missing).
        announce: Say on stderr which process is waited for.
        doing: What the holder does, for that message (``preparing``, ``reporting``).
    """
    output.mkdir(parents=True, exist_ok=True)
    with open(output / LOCK_FILE, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if announce:
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                print(f"waiting for the audit process {holder} to finish {doing} {output}", file=sys.stderr)
            fcntl.flock(handle, fcntl.LOCK_EX)
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {platform.node()}\n")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def filesystem_type(path: Path) -> str | None:
    """The type of the filesystem holding ``path`` from ``/proc/mounts`` (``None`` if unknown)."""
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return None
    target, best, kind = os.path.realpath(path), "", None
    for line in mounts:
        fields = line.split()
        if len(fields) < 3:
            continue
        point = fields[1].replace("\\040", " ")
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) > len(best):
            best, kind = point, fields[2]
    return kind


def warn_if_network_filesystem(path: Path) -> None:
    """Warn (:class:`NetworkFilesystemWarning`) when ``path`` is on a network filesystem."""
    kind = filesystem_type(path)
    if kind is not None and (kind in _NETWORK_FILESYSTEMS or kind.startswith("nfs")):
        warnings.warn(
            f"{path} is on a network filesystem ({kind}): SQLite's locking is unreliable there, so run one audit "
            "process per output directory, or one torchrun job (rank 0 is the only writer)",
            NetworkFilesystemWarning,
            stacklevel=2,
        )
