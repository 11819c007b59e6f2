"""bench/checkout.py's generated repository: the random blobs go in through their own raw
fast-import stream, yet the history is the same one the seed always gave (same commit ids),
so checkout figures from before and after stay comparable."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"

# Generates a small repository with bench/ first on the path, as `python bench/checkout.py`
# sees it, and prints the tip after create() and after add_commits().
_GENERATE = """
import pathlib, sys
sys.path.insert(0, sys.argv[1])
from harness import load_script
module = load_script(pathlib.Path(sys.argv[2]), "bench_checkout")
gen = module.RepoGenerator(
    files=30, binaries=3, blob_kb=8, edits_per_commit=4, binary_every=2, seed=7
)
bare = pathlib.Path(sys.argv[3])
print(gen.create(bare, 25))
print(gen.add_commits(bare, 3))
"""
# The tips the single inline fast-import stream wrote for these parameters.
_TIP = "e405be2fce2e084a4a8882a1e3852ae7b6f01ee2"
_TIP_AFTER_3 = "a57e82bde461615dad204d25effbe73f683ba665"


def _git(bare: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(bare), *args], check=True, capture_output=True, text=True
    ).stdout


def test_generated_history_is_the_seeds_history(tmp_path: Path) -> None:
    bare = tmp_path / "bench.git"
    out = subprocess.run(
        [sys.executable, "-c", _GENERATE, str(BENCH), str(BENCH / "checkout.py"), str(bare)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == [_TIP, _TIP_AFTER_3]
    assert _git(bare, "rev-list", "--count", _TIP).strip() == "25"
    tree = _git(bare, "ls-tree", "-r", "-l", _TIP).splitlines()
    blobs = {line.split()[4]: int(line.split()[3]) for line in tree}
    assert {p: s for p, s in blobs.items() if p.endswith(".bin")} == {
        f"assets/blob_{j:03d}.bin": 8 * 1024 for j in range(3)
    }
    fsck = subprocess.run(["git", "-C", str(bare), "fsck", "--full"], capture_output=True)
    assert fsck.returncode == 0, fsck.stderr[-2000:]
