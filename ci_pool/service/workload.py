"""A build-like workload run the same way in a container and on the host, to weigh what
nested Docker costs on real work: a generated C project compiled file by file and linked,
its program run, then a Python test suite over its output. ``ci-pool doctor`` runs a small
one; ``bench/modes.py`` a few hundred files.

No image here has a compiler and none can be pulled, so the container is the busybox
image with the host's ``/usr`` (compiler, binutils, headers, Python) bind-mounted
read-only: both sides run the same binaries, and only the nesting differs."""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from docker.types import Mount

from ci_pool import container_engine, defaults

#: Where the project sits inside the container (a bind mount, like a job's workspace).
IN_CONTAINER = "/bench"
_PATH = "/usr/bin:/bin"
_TOOLS = ("/usr/bin/cc", "/usr/bin/python3")
_KEEPALIVE = "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait $!; done"

#: Compile the files (``make -j`` style, one compiler per CPU), link, run the program, run
#: the tests: what a CI build step does.
BUILD_SCRIPT = """set -e
cd "$1"
rm -rf out && mkdir out
cd out
ls ../src/*.c | xargs -P "$JOBS" -n 8 "$CC" -O1 -pipe -c
cd ..
"$CC" -pipe out/*.o -o out/app
./out/app > out/app.txt
"$PY" -B -m unittest discover -s tests -q 2> out/tests.txt
"""

#: Without a compiler: shell arithmetic, then small files written, read and removed.
SHELL_SCRIPT = """set -e
cd "$1"
i=0; while [ "$i" -lt 20000 ]; do i=$((i+1)); done
n=0; while [ "$n" -lt 200 ]; do echo "$n" > "f$n"; cat "f$n" > /dev/null; n=$((n+1)); done
rm -f f*
"""

_C_UNIT = """#include <stdint.h>
static uint64_t mix_{i}(uint64_t x) {{
    x ^= x >> 31; x *= 0x9E3779B97F4A7C15ull; return x ^ (x >> 29);
}}
uint64_t unit_{i}(uint64_t seed) {{
    uint64_t acc = seed + {i}u;
    for (int k = 0; k < 64; k++) {{ acc = mix_{i}(acc + (uint64_t)k * {i}u); }}
    return acc;
}}
"""

_TEST_MODULE = """import hashlib
import unittest
from pathlib import Path


class Test{i}(unittest.TestCase):
    def test_program_output(self):
        lines = Path("out/app.txt").read_text().split()
        self.assertEqual(len(lines), {units})

    def test_hashing(self):
        digest = b"{i}"
        for _ in range(20000):
            digest = hashlib.sha256(digest).digest()
        self.assertEqual(len(digest), 32)

    def test_sorting(self):
        values = [(k * 7919 + {i}) % 10007 for k in range(50000)]
        self.assertEqual(sorted(values)[0], min(values))
"""


@dataclass(frozen=True, slots=True)
class Project:
    path: Path
    #: "build" (C files and Python tests) or "shell" (no compiler on this host).
    kind: str
    c_files: int
    test_modules: int

    def describe(self) -> str:
        if self.kind == "build":
            return (
                f"build of {self.c_files} C files (cc -O1, one compiler per CPU, linked, run) and "
                f"{self.test_modules} Python test modules"
            )
        return "shell workload (no cc and python3 under /usr here)"


@dataclass(frozen=True, slots=True)
class Comparison:
    nested_s: list[float]
    host_s: list[float]

    @property
    def nested(self) -> float:
        return statistics.median(self.nested_s)

    @property
    def host(self) -> float:
        return statistics.median(self.host_s)

    @property
    def ratio(self) -> float:
        return self.nested / self.host if self.host > 0 else 1.0

    @property
    def degraded(self) -> bool:
        """Over the design's threshold: the capability is better run in host mode."""
        return self.ratio > defaults.DOCTOR_OVERHEAD_WARN


def _tools() -> dict[str, str]:
    # Resolved here: /usr/bin/cc goes through /etc/alternatives, which the container lacks.
    return {
        "CC": os.path.realpath(_TOOLS[0]),
        "PY": os.path.realpath(_TOOLS[1]),
        "JOBS": str(os.cpu_count() or 1),
    }


def _env(home: str) -> dict[str, str]:
    return {"PATH": _PATH, "LC_ALL": "C", "HOME": home, **_tools()}


def toolchain_missing() -> str | None:
    """Why the build workload cannot run here (the shell one is used instead), or None."""
    missing = [tool for tool in _TOOLS if not os.access(tool, os.X_OK)]
    return f"{' and '.join(missing)} missing" if missing else None


def write_project(dest: Path, c_files: int, test_modules: int) -> Project:
    """Generate the project into ``dest``: ``c_files`` units plus a main, and the tests."""
    dest.mkdir(parents=True, exist_ok=True)
    if toolchain_missing() is not None:
        (dest / "build.sh").write_text(SHELL_SCRIPT)
        return Project(dest, "shell", 0, 0)
    src, tests = dest / "src", dest / "tests"
    src.mkdir(exist_ok=True)
    tests.mkdir(exist_ok=True)
    for i in range(c_files):
        (src / f"unit_{i:04d}.c").write_text(_C_UNIT.format(i=i))
    decls = "".join(f"uint64_t unit_{i}(uint64_t);\n" for i in range(c_files))
    calls = "".join(
        f'    printf("%llu\\n", (unsigned long long)unit_{i}(1));\n' for i in range(c_files)
    )
    (src / "main.c").write_text(
        f"#include <stdio.h>\n#include <stdint.h>\n{decls}int main(void) {{\n{calls}"
        "    return 0;\n}\n"
    )
    for i in range(test_modules):
        (tests / f"test_{i:03d}.py").write_text(_TEST_MODULE.format(i=i, units=c_files))
    (dest / "build.sh").write_text(BUILD_SCRIPT)
    return Project(dest, "build", c_files, test_modules)


def _shell(busybox: str | None) -> list[str]:
    # The container's shell is busybox: the host runs the same one where it has it.
    return [busybox, "sh"] if busybox else ["/bin/sh"]


def run_on_host(project: Project, busybox: str | None) -> float:
    """Seconds for one run of the workload on this host."""
    start = time.perf_counter()
    subprocess.run(
        [*_shell(busybox), str(project.path / "build.sh"), str(project.path)],
        env=_env(str(project.path)),
        check=True,
        capture_output=True,
        timeout=defaults.WORKLOAD_TIMEOUT,
    )
    return time.perf_counter() - start


@contextmanager
def container(client: Any, image: str, project: Project) -> Iterator[Any]:
    """A started, labelled container of ``image`` with the project mounted (and, for the
    build workload, the host's /usr read-only); removed on exit."""
    mounts = [Mount(IN_CONTAINER, str(project.path), type="bind")]
    if project.kind == "build":
        mounts += [
            Mount("/usr", "/usr", type="bind", read_only=True),
            Mount("/lib64", "/usr/lib64", type="bind", read_only=True),
            Mount("/lib", "/usr/lib", type="bind", read_only=True),
        ]
    box = client.containers.run(
        image,
        ["sh", "-c", _KEEPALIVE],
        detach=True,
        network_mode="none",
        labels={defaults.LABEL_DOCTOR: "workload"},
        mounts=mounts,
        tmpfs={"/tmp": ""},
        environment=_env(IN_CONTAINER),
    )
    try:
        yield box
    finally:
        box.remove(force=True)


def run_in_container(box: Any) -> float:
    """Seconds for one run of the workload inside ``box`` (an exec, as a job's step)."""
    start = time.perf_counter()
    api = box.client.api
    exec_id = api.exec_create(box.id, ["sh", f"{IN_CONTAINER}/build.sh", IN_CONTAINER])["Id"]
    output = b"".join(container_engine.exec_output(api, exec_id))
    took = time.perf_counter() - start
    code = api.exec_inspect(exec_id).get("ExitCode")
    if code != 0:
        out = output.decode(errors="replace").strip()[-300:]
        raise RuntimeError(f"the workload exited {code} in the container: {out}")
    return took


def compare(client: Any, image: str, project: Project, runs: int) -> Comparison:
    """The workload ``runs`` times in each mode, alternating, after one warm-up each."""
    busybox = shutil.which("busybox")
    nested: list[float] = []
    host: list[float] = []
    with container(client, image, project) as box:
        run_in_container(box)
        run_on_host(project, busybox)
        for _ in range(runs):
            nested.append(run_in_container(box))
            host.append(run_on_host(project, busybox))
    return Comparison(nested, host)
