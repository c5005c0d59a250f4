"""`fedhft devices ...` through the devices CLI's own entry point."""

from __future__ import annotations

import json

from devices import DeviceProfile, load_catalog
from devices.cli import format_table, main


def test_list_shows_every_tier(capsys):
    assert main(["devices", "list"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in load_catalog())


def test_show_and_unknown_tier(capsys):
    assert main(["devices", "show", "rpi5"]) == 0
    assert "plan.depth" in capsys.readouterr().out
    assert main(["devices", "show", "nope"]) == 2
    assert capsys.readouterr().err.startswith("fedhft devices: unknown tier 'nope'; known tiers:")


def _fixed_profile(monkeypatch, available_mb: float, gflops: float) -> None:
    import devices._profiler as profiler

    monkeypatch.setattr(
        profiler,
        "profile_device",
        lambda quick=True: profiler.DeviceProfile(
            total_memory_mb=available_mb * 2,
            available_memory_mb=available_mb,
            cpu_count=4,
            battery_percent=None,
            charging=None,
            matmul_gflops=gflops,
            platform="Linux",
            machine="aarch64",
        ),
    )


def test_profile_json_has_the_hello_payload_and_the_recommended_tier(capsys, monkeypatch):
    """The README promises `fedhft devices profile --json` gives this machine's profile AND tier."""
    _fixed_profile(monkeypatch, available_mb=800, gflops=30)  # rpi5: 384 MB, 25 GFLOP/s
    assert main(["devices", "profile", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert DeviceProfile.from_dict(out["profile"]).cpu_count == 4  # still exactly what hello sends
    assert out["recommended_tier"] == "rpi5" and out["no_tier_reason"] is None


def test_profile_json_says_why_no_tier_fits(capsys, monkeypatch):
    _fixed_profile(monkeypatch, available_mb=100, gflops=1)
    assert main(["devices", "profile", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["recommended_tier"] is None and "no tier fits this device" in out["no_tier_reason"]


def test_profile_measures_this_machine(capsys):
    assert main(["devices", "profile", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["profile"]["cpu_count"] >= 1
    assert main(["devices", "profile"]) == 0
    assert "recommended tier" in capsys.readouterr().out


def test_table_aligns_columns():
    lines = format_table(("name", "mb"), [("a", 1), ("long-name", 1024)]).splitlines()
    assert len({len(line) for line in lines}) == 1 and lines[1].endswith("   1")
