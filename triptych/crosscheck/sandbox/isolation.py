"""Walls around the process that runs a user's code, on Linux, with no root and no container.

The child (worker.py) raises them itself before the user's first line runs, in two steps:
- early(), before NumPy starts a thread: it joins the pids cgroup the checker made for it (where the
  checker may make one), enters a network namespace of its own (a loopback that is down; unprivileged
  users get it inside a user namespace, which needs a single-threaded process), and lowers rlimits
  (open files, file size, core dumps, and RLIMIT_NPROC for a user other than root: the kernel exempts
  uid 0 from it);
- restrict(), once the framework is imported: Landlock (Linux 5.13+) lets it write only in its
  scratch folder (a fresh temporary folder, its cwd) and read only the Python it runs on, system
  libraries, a few files of /etc, /proc, /sys and the submission itself (its file, or its package or
  project folder): not the submissions beside it, not the teacher's home. Landlock's TCP rules
  (Linux 6.7+) refuse every bind and connect, and its scopes (Linux 6.12+) keep it from signalling or
  reaching an abstract socket of any process outside its domain (the checker, the other workers).
  A child of root then drops every capability, so uid 0 is no way around the walls.

The checker's side (a pids cgroup, the subreaper, the sweep after each case) is containment.py.
References and verdicts never enter the child: it computes outputs only.
Standard library only: the child runs under `python -I`, maybe under the user's own interpreter.
"""
from __future__ import annotations

import ctypes
import json
import os
import sys
import threading

ENV = "TRIPTYCH_ISOLATION"  # the plan, JSON, from the checker to its child
MARK = "TRIPTYCH_SANDBOXED"  # in every sandboxed process's environment: a fallback way to know them
PROCESS_BUDGET = 256  # processes a submission may have at once: a Pool, not a fork bomb
OPEN_FILES = 4096
FILE_BYTES = 2 * 1024**3  # what one write may grow a file to, in the scratch folder

# Linux constants (uapi headers): prctl, clone flags, Landlock's syscalls and access bits.
_PR_SET_NO_NEW_PRIVS, _PR_CAPBSET_DROP, _PR_CAP_AMBIENT = 38, 24, 47
_CLONE_NEWUSER, _CLONE_NEWNET = 0x10000000, 0x40000000
_SYS_CREATE_RULESET, _SYS_ADD_RULE, _SYS_RESTRICT_SELF = 444, 445, 446
_EXECUTE, _WRITE_FILE, _READ_FILE, _READ_DIR = 1, 2, 4, 8
_REFER, _TRUNCATE, _IOCTL_DEV = 1 << 13, 1 << 14, 1 << 15
_FILE_RIGHTS = _EXECUTE | _WRITE_FILE | _READ_FILE | _TRUNCATE | _IOCTL_DEV
_READ = _EXECUTE | _READ_FILE | _READ_DIR
_SYSTEM_DIRS = ("/usr", "/lib", "/lib32", "/lib64", "/libx32", "/bin", "/sbin", "/proc", "/sys")
_ETC = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "passwd", "group", "nsswitch.conf", "hosts",
        "host.conf", "resolv.conf", "gai.conf", "os-release", "ssl", "pki", "ca-certificates", "mime.types")
_DEVICES_RW = ("null", "zero", "full")
_DEVICES_R = ("random", "urandom")
STATE: dict = {}  # what early() did, for restrict() and the hello


# ---------------------------------------------------------------- system calls

def load_libc():
    lib = ctypes.CDLL(None, use_errno=True)
    lib.syscall.restype = ctypes.c_long
    return lib


def _check(result: int) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return result


def landlock_abi() -> int:
    """Landlock's ABI version (0: absent or disabled)."""
    if not sys.platform.startswith("linux"):
        return 0
    try:
        return max(0, load_libc().syscall(ctypes.c_long(_SYS_CREATE_RULESET), None, ctypes.c_size_t(0),
                                      ctypes.c_uint32(1)))
    except (OSError, AttributeError):
        return 0


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("fs", ctypes.c_uint64), ("net", ctypes.c_uint64), ("scoped", ctypes.c_uint64)]


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def _fs_rights(abi: int) -> int:
    rights = (1 << 13) - 1  # ABI 1: execute .. make_sym
    return rights | (_REFER if abi >= 2 else 0) | (_TRUNCATE if abi >= 3 else 0) | (_IOCTL_DEV if abi >= 5 else 0)


# ---------------------------------------------------------------- the child, before NumPy

def early() -> dict:
    """Read the plan from the environment and apply what must come first. Returns STATE."""
    plan = json.loads(os.environ.pop(ENV, "") or "{}")
    STATE.clear()
    STATE.update(plan=plan, processes="off", network="off", rlimits=[])
    if not plan or not sys.platform.startswith("linux"):
        return STATE
    libc = load_libc()
    if plan.get("cgroup"):
        try:
            with open(os.path.join(plan["cgroup"], "cgroup.procs"), "w") as f:
                f.write(str(os.getpid()))
            STATE["processes"] = f"pids cgroup (at most {PROCESS_BUDGET})"
        except OSError:
            pass
    uid, gid = os.geteuid(), os.getegid()
    if uid == 0 and libc.unshare(_CLONE_NEWNET) == 0:
        STATE["network"] = "network namespace"
    elif threading.active_count() == 1 and libc.unshare(_CLONE_NEWUSER | _CLONE_NEWNET) == 0:
        # Inside, the same uid and gid as outside: files keep their owners.
        for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"), ("gid_map", f"{gid} {gid} 1")):
            try:
                with open(f"/proc/self/{name}", "w") as f:
                    f.write(text)
            except OSError:
                pass
        STATE["network"] = "network namespace (in a user namespace)"
    _rlimits(uid)
    return STATE


def _rlimits(uid: int) -> None:
    import resource
    wanted = [("RLIMIT_NOFILE", OPEN_FILES), ("RLIMIT_FSIZE", FILE_BYTES), ("RLIMIT_CORE", 0)]
    if uid != 0 and STATE["processes"] == "off":
        # Counted per real uid: inside the user namespace just made, from zero; else across the whole
        # machine, so the user's processes now plus the budget.
        fresh = STATE["network"].endswith("(in a user namespace)")
        wanted.append(("RLIMIT_NPROC", (0 if fresh else _processes_of(uid)) + PROCESS_BUDGET))
    for name, value in wanted:
        which = getattr(resource, name)
        try:
            soft, hard = resource.getrlimit(which)
            cap = value if hard == resource.RLIM_INFINITY else min(hard, value)
            resource.setrlimit(which, (min(cap, soft) if soft != resource.RLIM_INFINITY else cap, cap))
            STATE["rlimits"].append(name[7:].lower())
        except (ValueError, OSError):
            pass
    if "nproc" in STATE["rlimits"]:
        STATE["processes"] = f"RLIMIT_NPROC (at most {PROCESS_BUDGET} more processes)"
    elif STATE["processes"] == "off" and uid == 0:
        STATE["processes"] = "off (uid 0 is exempt from RLIMIT_NPROC and no pids cgroup is writable)"


def _processes_of(uid: int) -> int:
    n = 0
    for pid in os.listdir("/proc"):
        try:
            if pid.isdigit() and os.stat(f"/proc/{pid}").st_uid == uid:
                n += 1
        except OSError:
            pass
    return n


# ---------------------------------------------------------------- the child, before the user's code

def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _readable(plan: dict) -> tuple[list[str], list[str]]:
    """(folders, files) the child may read: its Python, the shared libraries it has mapped, system
    folders, the sandbox's own files, the submission. A folder that holds a protected one (the class
    folder, the teacher's home) is never given whole; from a sys.path entry like that, its packages
    and modules are."""
    protected = [os.path.realpath(p) for p in plan.get("protect", []) if p]
    folders, files = set(_SYSTEM_DIRS), set()
    candidates = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix, os.path.dirname(__file__),
                  *(p for p in sys.path if p)}
    for path in candidates:
        real = os.path.realpath(path)
        if not os.path.isdir(real):
            continue
        if not any(_inside(p, real) for p in protected):
            folders.add(real)
            continue
        for entry in os.listdir(real):  # a folder above the class: its importable entries only
            full = os.path.join(real, entry)
            if any(_inside(p, full) for p in protected):
                continue
            if os.path.isfile(os.path.join(full, "__init__.py")):
                folders.add(full)
            elif entry.endswith((".py", ".so", ".pth")) and os.path.isfile(full):
                files.add(full)
    try:
        with open("/proc/self/maps") as f:
            files.update(line.split(None, 5)[5].strip() for line in f if len(line.split(None, 5)) == 6)
    except OSError:
        pass
    files.add(os.path.realpath(sys.executable))
    files.update(os.path.join("/etc", name) for name in _ETC)
    for item in plan.get("readable", []):
        (folders if os.path.isdir(item) else files).add(os.path.realpath(item))
    return sorted(folders), sorted(f for f in files if f.startswith("/") and os.path.exists(f))


def _add_rule(libc, ruleset: int, path: str, rights: int) -> None:
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError:
        return
    try:
        if not os.path.isdir(path):
            rights &= _FILE_RIGHTS
        rule = _PathBeneath(rights, fd)
        libc.syscall(ctypes.c_long(_SYS_ADD_RULE), ctypes.c_int(ruleset), ctypes.c_int(1), ctypes.byref(rule),
                     ctypes.c_uint32(0))
    finally:
        os.close(fd)


def _landlock(plan: dict, abi: int) -> None:
    libc = load_libc()
    fs = _fs_rights(abi)
    attr = _RulesetAttr(fs, 3 if abi >= 4 else 0, 3 if abi >= 6 else 0)  # TCP bind+connect; signals+sockets
    size = 24 if abi >= 6 else 16 if abi >= 4 else 8
    ruleset = _check(libc.syscall(ctypes.c_long(_SYS_CREATE_RULESET), ctypes.byref(attr), ctypes.c_size_t(size),
                                  ctypes.c_uint32(0)))
    try:
        folders, files = _readable(plan)
        for path in folders + files:
            _add_rule(libc, ruleset, path, _READ)
        for name in _DEVICES_RW:
            _add_rule(libc, ruleset, f"/dev/{name}", _READ_FILE | _WRITE_FILE)
        for name in _DEVICES_R:
            _add_rule(libc, ruleset, f"/dev/{name}", _READ_FILE)
        for name in (n for n in listdir("/dev") if n.startswith("nvidia")):  # a GPU, under --python
            _add_rule(libc, ruleset, f"/dev/{name}", _READ_FILE | _WRITE_FILE | _IOCTL_DEV)
        # multiprocessing's semaphores are files in /dev/shm; the scratch folder is the child's own.
        for path in ("/dev/shm", plan["scratch"]):
            _add_rule(libc, ruleset, path, fs & ~_IOCTL_DEV)
        _check(libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
        _check(libc.syscall(ctypes.c_long(_SYS_RESTRICT_SELF), ctypes.c_int(ruleset), ctypes.c_uint32(0)))
    finally:
        os.close(ruleset)


def listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []


def _drop_capabilities() -> bool:
    """A child of root keeps uid 0 (its files stay its own) but loses every capability, now and
    across exec: no raw disk, no kernel memory, no raised rlimits, no other uid's files."""
    libc = load_libc()
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            last = int(f.read())
    except (OSError, ValueError):
        last = 40
    libc.prctl(_PR_CAP_AMBIENT, 4, 0, 0, 0)  # PR_CAP_AMBIENT_CLEAR_ALL
    for cap in range(last + 1):
        libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0)
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this process
    data = (ctypes.c_uint32 * 6)()
    return libc.capset(header, data) == 0


class _Helpers:
    """Finds a lone file's helper modules by name: Python's own finder lists their folder first,
    which the child may not (it is the class folder)."""

    def __init__(self, files: dict):
        self.files = files

    def find_spec(self, fullname, path=None, target=None):
        import importlib.util
        where = self.files.get(fullname) if path is None else None
        if where is None:
            return None
        folder = [os.path.dirname(where)] if where.endswith("__init__.py") else None
        return importlib.util.spec_from_file_location(fullname, where, submodule_search_locations=folder)


def restrict() -> dict:
    """Landlock and capabilities, after early(). Returns what holds, one entry per protection."""
    plan = STATE.get("plan") or {}
    report = {"filesystem write": "off", "filesystem read": "off", "network": STATE.get("network", "off"), "signals": "off",
              "processes": STATE.get("processes", "off"), "rlimits": ", ".join(STATE.get("rlimits", [])) or "off"}
    if not plan:
        return report
    abi = landlock_abi()
    if abi >= 1:
        try:
            _landlock(plan, abi)
            report["filesystem write"] = report["filesystem read"] = f"Landlock ABI {abi}"
            if abi >= 6:
                report["signals"] = "Landlock scopes (signals, abstract unix sockets)"
            if abi >= 4:
                tcp = "Landlock TCP rules"
                report["network"] = tcp if report["network"] == "off" else f"{report['network']} + {tcp}"
        except OSError:
            pass
    if plan.get("helpers"):
        sys.meta_path.append(_Helpers(plan["helpers"]))
    if os.geteuid() == 0:
        report["capabilities"] = "all dropped" if _drop_capabilities() else "off (still root)"
    return report


if __name__ == "__main__" and sys.argv[1:] == ["--probe"]:  # protections.py: what holds on this kernel
    early()
    found = restrict()
    home = (STATE.get("plan") or {}).get("protect", [""])[-1]
    try:  # the walls, tried: a home that can still be listed, a TCP connect that still gets out
        os.listdir(home)
        found["filesystem read"] = "off (the home folder could still be listed)"
    except OSError:
        pass
    import socket
    try:
        socket.create_connection(("127.0.0.1", 9), timeout=1).close()
        found["network"] = "off (a TCP connection to localhost went through)"
    except OSError as exc:
        if exc.errno == 111 and found["network"] == "off":  # refused: the loopback is reachable
            found["network"] = "off (localhost is reachable)"
    print(json.dumps(found))
