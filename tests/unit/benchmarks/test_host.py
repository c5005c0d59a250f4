"""The sweep report's line on the hosts of its rows."""

from __future__ import annotations

from benchmarks._host import hosts_note
from simulate import host_label, parse_cpuinfo

CPUINFO = "vendor_id : GenuineIntel\ncpu family : 6\nmodel : 207\nmodel name : Xeon\nflags : avx2 avx512f\n"


def test_hosts_note_counts_rows_per_host_and_the_unrecorded_ones():
    a = {"cpu": parse_cpuinfo(CPUINFO), "cores": 2, "torch_cpu_capability": "AVX512", "versions": {"torch": "2.13"}}
    b = {**a, "cores": 4}
    note = hosts_note([{"host": a}, {"host": a}, {"host": b}, {}])
    assert f"2 on {host_label(a)}; " in note and f"1 on {host_label(b)}" in note
    assert "1 on not recorded" in note
    assert hosts_note([]) == ""
