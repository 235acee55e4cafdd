"""The kernels' seccomp filter: the BPF program read instruction by instruction (both
architectures), and a real process under it that gets EPERM for ptrace and unshare and
still runs Python."""

from __future__ import annotations

import errno
import json
import os
import platform
import shutil
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from kernels.sandbox import seccomp

AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
TABLES = {"x86_64": seccomp._X86_64, "aarch64": seccomp._AARCH64}
ALLOW = 0x7FFF0000
ERRNO = 0x00050000
X32 = 0x40000000
LD_W_ABS, JEQ_K, JGE_K, RET_K = 0x20, 0x15, 0x35, 0x06


def instructions(program: bytes) -> list[tuple[int, int, int, int]]:
    assert len(program) % 8 == 0
    return [struct.unpack_from("=HBBI", program, i) for i in range(0, len(program), 8)]


def run_filter(program: bytes, arch: int, nr: int) -> int:
    """What the kernel's BPF interpreter returns for a call `nr` of `arch` (the subset of
    classic BPF the filter uses; anything else fails the test)."""
    insns = instructions(program)
    data = {0: nr, 4: arch}  # struct seccomp_data: nr, arch, ...
    acc, pc = 0, 0
    while True:
        code, jt, jf, k = insns[pc]
        if code == LD_W_ABS:
            acc = data[k]
        elif code == JEQ_K:
            pc += jt if acc == k else jf
        elif code == JGE_K:
            pc += jt if acc >= k else jf
        elif code == RET_K:
            return k
        else:
            raise AssertionError(f"unexpected BPF instruction {code:#x} at {pc}")
        pc += 1


@pytest.mark.parametrize("machine", ["x86_64", "aarch64"])
def test_the_program_checks_the_arch_then_blocks_each_listed_call(machine: str) -> None:
    program = seccomp.build_filter(machine)
    assert program is not None
    table = TABLES[machine]
    insns = instructions(program)
    x32_check = machine == "x86_64"
    assert len(insns) == 4 + x32_check + len(table) + 2  # no more than it needs
    assert insns[0] == (LD_W_ABS, 0, 0, 4)  # seccomp_data.arch
    assert insns[1][0] == JEQ_K and insns[1][3] == AUDIT_ARCH[machine]
    assert insns[2] == (RET_K, 0, 0, ERRNO | errno.ENOSYS)  # a foreign ABI: refused outright
    assert insns[3] == (LD_W_ABS, 0, 0, 0)  # seccomp_data.nr
    assert insns[-2] == (RET_K, 0, 0, ALLOW) and insns[-1] == (RET_K, 0, 0, ERRNO | errno.EPERM)
    arch = AUDIT_ARCH[machine]
    for name, nr in table.items():
        assert run_filter(program, arch, nr) == ERRNO | errno.EPERM, name
    blocked = set(table.values())
    for nr in range(0, 500):
        if nr not in blocked:
            assert run_filter(program, arch, nr) == ALLOW, nr
    other = AUDIT_ARCH["aarch64" if machine == "x86_64" else "x86_64"]
    assert run_filter(program, other, 0) == ERRNO | errno.ENOSYS
    assert run_filter(program, 0x40000003, 0) == ERRNO | errno.ENOSYS  # i386
    if x32_check:  # x32 calls come in on the x86_64 arch with bit 30 set
        for nr in (0, 1, X32 | 0, X32 | 101, X32 | 512):
            expected = ALLOW if nr < X32 else ERRNO | errno.EPERM
            assert run_filter(program, arch, nr) == expected


def test_both_tables_block_the_same_calls() -> None:
    assert set(seccomp._X86_64) == set(seccomp._AARCH64) == set(seccomp.BLOCKED)
    for table in TABLES.values():
        assert len(set(table.values())) == len(table)  # no number listed for two names


def test_an_unknown_arch_has_no_filter_and_this_machine_has_its_own() -> None:
    assert seccomp.build_filter("mips") is None
    assert seccomp.build_filter("i686") is None
    assert seccomp.build_filter() == seccomp.build_filter(platform.machine())


# What a process under the filter sees: the blocked calls fail with EPERM (they would work
# for root without it), ordinary work goes on.
PROBE = textwrap.dedent(
    """
    import ctypes, json, os, sys
    libc = ctypes.CDLL(None, use_errno=True)
    def call(fn, *args):
        ctypes.set_errno(0)
        return "ok" if fn(*args) == 0 else os.strerror(ctypes.get_errno())
    out = {
        "ptrace": call(libc.ptrace, 0, 0, None, None),  # PTRACE_TRACEME
        "unshare": call(libc.unshare, 0x00020000),  # CLONE_NEWNS
        "unshare_user": call(libc.unshare, 0x10000000),  # CLONE_NEWUSER
        "keyctl": call(libc.syscall, KEYCTL, 0, -1, 0),
        "getpid": os.getpid() > 0,
        "python": sum(i * i for i in range(1000)),
        "file": open(sys.executable, "rb").read(4).hex(),
        "seccomp": [l.split()[1] for l in open("/proc/self/status") if l.startswith("Seccomp:")],
    }
    print(json.dumps(out))
    """
)

LOAD = textwrap.dedent(
    """
    import ctypes, sys
    program = open(sys.argv[1], "rb").read()
    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_char_p)]
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.prctl(38, 1, 0, 0, 0) == 0  # PR_SET_NO_NEW_PRIVS
    prog = SockFprog(len(program) // 8, program)
    if libc.prctl(22, 2, ctypes.byref(prog), 0, 0) != 0:  # PR_SET_SECCOMP, FILTER
        raise OSError(ctypes.get_errno(), "seccomp")
    """
)

EPERM = os.strerror(errno.EPERM)


def probe_code() -> str:
    return PROBE.replace("KEYCTL", str(TABLES[platform.machine()]["keyctl"]))


def expect_filtered(stdout: str) -> None:
    out = json.loads(stdout.strip().splitlines()[-1])
    assert out["ptrace"] == out["unshare"] == out["unshare_user"] == out["keyctl"] == EPERM, out
    assert out["getpid"] is True and out["python"] == 332833500
    assert out["file"] == "7f454c46"  # reading files works
    assert out["seccomp"] == ["2"]  # SECCOMP_MODE_FILTER


needs_table = pytest.mark.skipif(
    platform.machine() not in TABLES, reason=f"no seccomp table for {platform.machine()}"
)


@needs_table
def test_a_process_under_the_filter_gets_eperm_and_still_runs_python(tmp_path: Path) -> None:
    program = seccomp.build_filter()
    assert program is not None
    (tmp_path / "filter.bpf").write_bytes(program)
    code = LOAD + probe_code()
    res = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "filter.bpf")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert res.returncode == 0, res.stderr
    expect_filtered(res.stdout)


@needs_table
def test_without_the_filter_the_probe_would_succeed_as_root() -> None:
    """The control: the same calls pass unfiltered, so the EPERMs above are the filter's."""
    if os.geteuid() != 0:
        pytest.skip("unprivileged, unshare(CLONE_NEWNS) fails anyway")
    res = subprocess.run(
        [sys.executable, "-c", probe_code()], capture_output=True, text=True, timeout=30
    )
    out = json.loads(res.stdout)
    assert out["ptrace"] == "ok" and out["unshare"] == "ok", out


@needs_table
def test_bubblewrap_loads_the_filter_from_a_descriptor_as_the_launcher_does(
    tmp_path: Path,
) -> None:
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        pytest.fail("bubblewrap is not installed (make system-deps)")
    program = seccomp.build_filter()
    assert program is not None
    fd = os.memfd_create("kss-seccomp-test", 0)
    try:
        os.write(fd, program)
        os.lseek(fd, 0, os.SEEK_SET)
        argv = [bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
        argv += ["--unshare-pid", "--die-with-parent", "--seccomp", str(fd)]
        argv += ["--", sys.executable, "-c", probe_code()]
        res = subprocess.run(argv, capture_output=True, text=True, timeout=30, pass_fds=[fd])
    finally:
        os.close(fd)
    assert res.returncode == 0, res.stderr
    expect_filtered(res.stdout)
