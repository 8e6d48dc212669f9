"""The timing-cache merge is re-read and written under a file lock: two writers sharing one file lose nothing."""

import json
import subprocess
import sys

from mtlora_deploy.utils.locking import update_file_locked

WRITER = """
import json, sys, time
from mtlora_deploy.utils.locking import update_file_locked

def add(key):
    def merge(current):
        entries = json.loads(current or b"{}")
        time.sleep(0.01)  # widen the read-modify-write window: without the lock the other writer would slip in here
        entries[key] = len(entries)
        return json.dumps(entries).encode()
    return merge

name, path = sys.argv[1], sys.argv[2]
for i in range(20):
    update_file_locked(path, add(f"{name}{i}"))
"""


def test_two_concurrent_writers_lose_nothing(tmp_path):
    cache = tmp_path / "timing.cache"
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, name, str(cache)]) for name in ("a", "b")]
    assert [w.wait(timeout=120) for w in writers] == [0, 0]
    entries = json.loads(cache.read_bytes())
    assert sorted(entries) == sorted(f"{n}{i}" for n in "ab" for i in range(20))
    assert sorted(entries.values()) == list(range(40)), "each writer saw every earlier write"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["timing.cache", "timing.cache.lock"]  # no temp files left


def test_update_merges_with_the_current_content_not_a_stale_copy(tmp_path):
    path = tmp_path / "c.bin"
    path.write_bytes(b"written by another build after this one started;")
    assert update_file_locked(path, lambda current: current + b"mine") == path.read_bytes()
    assert path.read_bytes() == b"written by another build after this one started;mine"
