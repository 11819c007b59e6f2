"""The embedded store's writer lock: writers of one SQLite file queue on a kernel lock
beside it; a dead holder's lock is freed by the OS; a forked child never holds its
parent's lock; every path out of a transaction releases it."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from ci_pool.store import Store
from ci_pool.store import writer_lock as wl

JOB = {
    "name": "build",
    "capability": "linux",
    "queue": "linux",
    "repo": "https://git.example.com/org/app.git",
    "ref": "main",
    "steps": [{"name": "run", "run": "true"}],
    "env": {},
    "labels": ["linux"],
    "timeout_s": 60,
    "max_attempts": 1,
}

# Takes the store's writer lock through a write transaction and keeps it until killed.
_HOLDER = textwrap.dedent(
    """
    import sys, time
    from ci_pool.store import Store
    store = Store(sys.argv[1])
    with store.session():
        print("held", flush=True)
        time.sleep(600)
    """
)

# Writes ``n`` jobs, one transaction each.
_WRITER = textwrap.dedent(
    """
    import sys
    from ci_pool.store import Store
    store = Store(sys.argv[1])
    for i in range(int(sys.argv[2])):
        store.create_job(name=f"w{i}", capability="linux", queue="linux",
                         repo="https://git.example.com/org/app.git", ref="main",
                         steps=[{"name": "run", "run": "true"}], env={},
                         labels=["linux"], timeout_s=60, max_attempts=1)
    print("done", flush=True)
    """
)


@pytest.fixture
def db(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path}/s.db"
    store = Store(url)
    store.init_schema()
    store.close()
    return url


def _python(code: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )


@contextmanager
def _holding(code: str, *args: str) -> Iterator[subprocess.Popen[str]]:
    """A process running ``code`` once it printed "held"; killed (SIGKILL) on the way out."""
    holder = _python(code, *args)
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held", holder.stderr
        yield holder
    finally:
        holder.kill()
        holder.wait(timeout=30)
        for pipe in (holder.stdout, holder.stderr):
            if pipe is not None:
                pipe.close()


def _try_lock(path: Path) -> bool:
    """Whether another process could take the writer lock now (checked from a child)."""
    code = (
        "import fcntl, os, sys\n"
        "fd = os.open(sys.argv[1], os.O_RDWR)\n"
        "try:\n    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\n"
        "except OSError:\n    sys.exit(1)\n"
    )
    return subprocess.run([sys.executable, "-c", code, str(path)], timeout=30).returncode == 0


def test_a_writer_waits_for_the_holder_and_proceeds_when_it_is_killed(db: str) -> None:
    with _holding(_HOLDER, db) as holder:
        store = Store(db)
        done = threading.Event()
        wrote: list[str] = []

        def write() -> None:
            wrote.append(store.create_job(**JOB).id)
            done.set()

        writer = threading.Thread(target=write, daemon=True)
        writer.start()
        assert not done.wait(0.5), "the write went in while another process held the lock"
        holder.kill()  # SIGKILL: no unlock, no rollback; the kernel frees the lock
        holder.wait(timeout=30)
        assert done.wait(20), "the write did not proceed after the holder died"
        writer.join(timeout=5)
        assert [j.id for j in store.list_jobs()] == wrote
        store.close()


@pytest.mark.parametrize("thread", ["main thread", "other thread"])
def test_a_holder_that_never_lets_go_delays_writers_only_for_the_bound(
    db: str, monkeypatch: pytest.MonkeyPatch, thread: str
) -> None:
    path = wl.lock_path(db)
    assert path is not None
    # Another program holds the file lock and never lets go (SQLite's own lock is free).
    code = (
        "import fcntl, os, sys, time\n"
        "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)\n"
        "fcntl.lockf(fd, fcntl.LOCK_EX)\n"
        "print('held', flush=True)\n"
        "time.sleep(600)\n"
    )
    with _holding(code, str(path)):
        monkeypatch.setattr(wl.defaults, "SQLITE_WRITER_LOCK_WAIT", 0.5)
        store = Store(db)
        # The write waits out the bound (a timer in the main thread, polling in others),
        # then SQLite's own lock decides.
        made: list[str] = []
        if thread == "main thread":
            made.append(store.create_job(**JOB).id)
        else:
            writer = threading.Thread(target=lambda: made.append(store.create_job(**JOB).id))
            writer.start()
            writer.join(timeout=30)
        assert [j.id for j in store.list_jobs()] == made != []
        assert not _try_lock(path)  # the holder still has it
        store.close()


def test_processes_writing_at_once_all_finish(db: str) -> None:
    writers = [_python(_WRITER, db, "60") for _ in range(3)]
    store = Store(db)
    for i in range(60):
        store.create_job(**{**JOB, "name": f"main{i}"})
    for w in writers:
        out, err = w.communicate(timeout=120)
        assert (w.returncode, out.strip()) == (0, "done"), err
    assert len(store.list_jobs(limit=1000)) == 240
    store.close()


def test_the_lock_is_released_on_every_path_out_of_a_write(db: str) -> None:
    store = Store(db)
    path = wl.lock_path(db)
    assert path is not None
    with pytest.raises(RuntimeError, match="boom"), store.session():
        assert not _try_lock(path)  # held inside the transaction
        raise RuntimeError("boom")
    assert _try_lock(path)
    with store.session():
        with store.session():  # nested in one thread: taken again, no self-deadlock
            pass
        assert not _try_lock(path)  # the inner exit does not release the outer hold
    assert _try_lock(path)
    store.create_job(**JOB)
    assert _try_lock(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    store.close()


def test_a_forked_child_does_not_hold_its_parents_lock(db: str) -> None:
    store = Store(db)
    path = wl.lock_path(db)
    assert path is not None
    read, write = os.pipe()
    with store.session():
        pid = os.fork()
        if pid == 0:  # the child: the parent still holds the lock
            code = 1
            try:
                os.close(read)
                child = Store(db)
                held = threading.Event()

                def child_write() -> None:
                    child.create_job(**{**JOB, "name": "child"})
                    held.set()

                t = threading.Thread(target=child_write, daemon=True)
                t.start()
                waited = not held.wait(0.5)
                os.write(write, b"1" if waited else b"0")
                code = 0 if held.wait(30) else 2
            finally:
                os._exit(code)
        os.close(write)
        assert os.read(read, 1) == b"1", "the child wrote while its parent held the lock"
    _, status = os.waitpid(pid, 0)
    os.close(read)
    assert os.waitstatus_to_exitcode(status) == 0
    assert sorted(j.name for j in store.list_jobs()) == ["child"]
    store.close()


@pytest.mark.parametrize(
    "url",
    [
        "sqlite://",
        "sqlite:///:memory:",
        "sqlite:///file:x?mode=memory&uri=true",
        "postgresql://h/db",
    ],
)
def test_no_lock_where_there_is_no_file(url: str) -> None:
    assert wl.for_url(url) is None


def test_one_lock_per_file_in_a_process(tmp_path: Path) -> None:
    a = wl.for_url(f"sqlite:///{tmp_path}/s.db")
    b = wl.for_url(f"sqlite:///{tmp_path}/./s.db")
    assert a is not None and a is b
    assert a.path == tmp_path / "s.db-writer.lock"
