"""The host record of results (simulate.host_info): /proc/cpuinfo parsing (golden), labels, this machine."""

from __future__ import annotations

from simulate import host_info, host_label, parse_cpuinfo

CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 207
model name\t: Intel(R) Xeon(R) Processor
flags\t\t: fpu sse2 avx2 fma avx512f avx512_vnni avx512_bf16 avx512_fp16

processor\t: 1
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 85
model name\t: Something Else
flags\t\t: fpu avx2
"""


def test_parse_cpuinfo_reads_the_first_processor_and_orders_its_kernel_flags_widest_first():
    assert parse_cpuinfo(CPUINFO) == {
        "vendor": "GenuineIntel",
        "model_name": "Intel(R) Xeon(R) Processor",
        "family_model": "6/207",
        "isa": ["avx512_fp16", "avx512_bf16", "avx512_vnni", "avx512f", "avx2", "fma"],
    }


def test_parse_cpuinfo_of_a_machine_without_it_gives_empty_fields():
    assert parse_cpuinfo("") == {"vendor": "", "model_name": "", "family_model": "?/?", "isa": []}


def test_host_label_names_cpu_widest_flag_cores_torch_and_pins():
    host = {
        "cpu": parse_cpuinfo(CPUINFO),
        "cores": 2,
        "torch_cpu_capability": "AVX2",
        "versions": {"torch": "2.13.0+cpu"},
        "pins": {"OPENBLAS_CORETYPE": "Haswell", "MKL_CBWR": "AVX2"},
    }
    assert host_label(host) == (
        "Intel(R) Xeon(R) Processor (6/207, avx512_fp16), 2 cores, torch 2.13.0+cpu AVX2, "
        "pins MKL_CBWR=AVX2,OPENBLAS_CORETYPE=Haswell"
    )


def test_host_info_of_this_machine_has_every_field(monkeypatch):
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    monkeypatch.setenv("MKL_CBWR", "")
    info = host_info()
    assert set(info) == {"cpu", "machine", "cores", "torch_cpu_capability", "versions", "pins"}
    assert info["pins"] == {"OPENBLAS_CORETYPE": "Haswell"}  # empty variables pin nothing
    assert info["cores"] >= 1 and info["versions"]["numpy"] != "absent"
