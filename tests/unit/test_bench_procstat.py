"""Server CPU from /proc (`bazar.bench.procstat`), on fake /proc texts and a fake /proc tree."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from bazar.bench import procstat

# utime 1234 and stime 56 (fields 14 and 15); the command name holds a space and a ')'
STAT = (
    "4242 (bazar serve) x) S 1 4242 4242 0 -1 4194560 900 0 0 0 1234 56 0 0 20 0 3 0 "
    "1000 300000000 9000 18446744073709551615 1 1 0 0 0 0 0 16781312 16386 0 0 0 17 1 0 0 0"
)
TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:2392 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 777 1
   1: 0100007F:2392 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 888 1
   2: 00000000:2393 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 999 1
"""  # 0x2392 = 9106: listening (777) and one accepted connection (888); 0x2393 on 0.0.0.0


def test_stat_cpu_ticks_adds_utime_and_stime_after_the_command_name() -> None:
    assert procstat.stat_cpu_ticks(STAT) == 1234 + 56


@pytest.mark.parametrize("text", ["", "4242 no parentheses at all", "4242 (x) S 1 2"])
def test_a_text_that_is_not_a_stat_line_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="stat"):
        procstat.stat_cpu_ticks(text)


def test_listening_inodes_take_the_listening_socket_only() -> None:
    assert procstat.listening_inodes(TCP, 9106) == {777}
    assert procstat.listening_inodes(TCP, 9107) == {999}
    assert procstat.listening_inodes(TCP, 9108) == set()


def fake_proc(root: Path) -> Path:
    """Two processes: 4242 holds socket 777 (the front end), 5000 holds nothing."""
    (root / "net").mkdir(parents=True)
    (root / "net" / "tcp").write_text(TCP)
    (root / "net" / "tcp6").write_text(TCP.splitlines()[0] + "\n")
    for pid, links in ((4242, ["/dev/null", "socket:[777]"]), (5000, ["socket:[123]"])):
        (root / str(pid) / "fd").mkdir(parents=True)
        (root / str(pid) / "stat").write_text(STAT)
        for number, target in enumerate(links):
            os.symlink(target, root / str(pid) / "fd" / str(number))
    (root / "self").mkdir()
    return root


def test_the_front_end_is_found_by_its_listening_socket(tmp_path: Path) -> None:
    proc = fake_proc(tmp_path)
    assert procstat.pid_listening_on(9106, proc) == 4242
    assert procstat.pid_listening_on(9999, proc) is None
    assert procstat.pid_listening_on(9107, proc) is None  # listening, but nobody holds it


def test_the_real_proc_finds_this_process_listening(tmp_path: Path) -> None:
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        assert procstat.pid_listening_on(listening.getsockname()[1]) == os.getpid()


def test_cpu_ticks_of_a_missing_process_is_none(tmp_path: Path) -> None:
    proc = fake_proc(tmp_path)
    assert procstat.sample({"frontend": 4242, "gone": 31337, "unknown": None}, proc) == {
        "frontend": 1290,
        "gone": None,
        "unknown": None,
    }


def test_cpu_use_is_per_request_and_per_core() -> None:
    before = {"frontend": 1000, "catalog-1": 500, "dead": 10, "unknown": None}
    after = {"frontend": 1100, "catalog-1": 520, "dead": None, "unknown": None}
    # 100 ticks of 10 ms = 1 s of CPU over 2 s: 50 % of a core; 1000 ms / 500 requests
    use = procstat.cpu_use(before, after, requests=500, window_s=2.0, ticks_per_s=100)
    assert use.ms_per_request == {"frontend": 2.0, "catalog-1": 0.4, "dead": None, "unknown": None}
    assert use.percent == {"frontend": 50.0, "catalog-1": 10.0, "dead": None, "unknown": None}
    assert use.total_ms_per_request == pytest.approx(2.4)


def test_cpu_use_without_requests_or_known_processes_is_none() -> None:
    use = procstat.cpu_use({"a": 1}, {"a": 2}, requests=0, window_s=1.0, ticks_per_s=100)
    assert use.ms_per_request == {"a": None}
    assert use.percent == {"a": 1.0}
    assert use.total_ms_per_request is None


def test_a_pid_reused_by_a_younger_process_is_unknown() -> None:
    use = procstat.cpu_use({"a": 500}, {"a": 3}, requests=10, window_s=1.0, ticks_per_s=100)
    assert use.ms_per_request == {"a": None}
