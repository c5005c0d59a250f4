"""What machine and libraries made a result (a benchmark row, a result document), so that results of
different hosts can be told apart.

Why: torch (MKL, oneDNN and its own vectorized kernels) and numpy's OpenBLAS choose their kernels per
CPU, so the same run can differ in its last bits from one machine to the next, and FedHFT's clustering
can turn those bits into different memberships. The sweep is made across sessions on whatever machine
each one gets; each row and result document records the host it ran on (see docs/DESIGN-NOTES.md, "what still drifts
between machines").
"""

from __future__ import annotations

import os
import platform
from importlib import metadata

#: Libraries whose version changes the numbers.
LIBRARIES = ("torch", "numpy", "transformers", "tokenizers", "safetensors")
#: Environment variables that pin a library's kernels (empty ones are left out of the fingerprint).
KERNEL_PINS = (
    "OPENBLAS_CORETYPE",
    "MKL_CBWR",
    "MKL_ENABLE_INSTRUCTIONS",
    "ONEDNN_MAX_CPU_ISA",
    "ATEN_CPU_CAPABILITY",
    "NPY_DISABLE_CPU_FEATURES",
)
#: CPU feature flags that decide which kernels the libraries pick, widest first.
ISA_FLAGS = ("amx_tile", "avx512_fp16", "avx512_bf16", "avx512_vnni", "avx512f", "avx2", "fma")


def parse_cpuinfo(text: str) -> dict:
    """The first processor's vendor, model name, family/model numbers and kernel-relevant flags, from
    the text of /proc/cpuinfo (empty fields where the text has none, as on non-x86 machines)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break  # the first processor is enough: a VM's CPUs are alike
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    flags = set(fields.get("flags", "").split())
    return {
        "vendor": fields.get("vendor_id", ""),
        "model_name": fields.get("model name", ""),
        "family_model": f"{fields.get('cpu family', '?')}/{fields.get('model', '?')}",
        "isa": [f for f in ISA_FLAGS if f in flags],
    }


def _versions() -> dict[str, str]:
    out = {}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


def _torch_capability() -> str:
    try:
        import torch

        return str(torch.backends.cpu.get_cpu_capability())
    except (ImportError, AttributeError):
        return "unknown"


def usable_cores() -> int:
    """The cores this process may run on (its affinity where the OS has one, else all of them)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def host_info() -> dict:
    """This machine's CPU, cores, library versions, torch's kernel level and any kernel pins."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            cpu = parse_cpuinfo(f.read())
    except OSError:
        cpu = parse_cpuinfo("")
    cpu["model_name"] = cpu["model_name"] or platform.processor()
    return {
        "cpu": cpu,
        "machine": platform.machine(),
        "cores": usable_cores(),
        "torch_cpu_capability": _torch_capability(),
        "versions": _versions(),
        "pins": {k: os.environ[k] for k in KERNEL_PINS if os.environ.get(k)},
    }


def host_label(host: dict) -> str:
    """A short name of a host fingerprint for reports: CPU, widest ISA flag, cores, torch version, pins."""
    cpu = host.get("cpu", {})
    isa = (cpu.get("isa") or ["?"])[0]
    pins = ",".join(f"{k}={v}" for k, v in sorted(host.get("pins", {}).items()))
    return (
        f"{cpu.get('model_name') or '?'} ({cpu.get('family_model', '?')}, {isa}), {host.get('cores', '?')} cores, "
        f"torch {host.get('versions', {}).get('torch', '?')} {host.get('torch_cpu_capability', '?')}"
        + (f", pins {pins}" if pins else "")
    )
