"""The device profiler, its wire form, and tier recommendation."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devices import DeviceProfile, _profiler, load_catalog, profile_device, recommend_tier


def _profile(mem=4000.0, gflops=50.0, battery=None, charging=None) -> DeviceProfile:
    return DeviceProfile(
        total_memory_mb=2 * mem,
        available_memory_mb=mem,
        cpu_count=4,
        battery_percent=battery,
        charging=charging,
        matmul_gflops=gflops,
        platform="Linux",
        machine="aarch64",
    )


def test_profile_device_is_sane_and_quick():
    t0 = time.perf_counter()
    p = profile_device(quick=True)
    assert time.perf_counter() - t0 < 5.0  # ~0.3 s of benchmark; generous for a loaded CI box
    assert 0 < p.available_memory_mb <= p.total_memory_mb
    assert p.cpu_count >= 1 and p.matmul_gflops > 0
    assert p.battery_percent is None or 0 <= p.battery_percent <= 100
    assert isinstance(p.has_cuda, bool) and p.platform and p.machine


def test_profile_round_trips_through_json():
    p = _profile(battery=55.5, charging=False)
    assert DeviceProfile.from_dict(json.loads(json.dumps(p.to_dict()))) == p


@pytest.mark.parametrize(
    "change, message",
    [
        ({"schema_version": 2}, "schema_version 2 is a newer major version than this side reads (1): update"),
        ({"schema_version": 0}, "schema_version must be a positive integer"),
        ({"schema_version": "1"}, "schema_version must be a positive integer"),
        ({"schema_version": True}, "schema_version must be a positive integer"),
        ({"matmul_gflops": "fast"}, "DeviceProfile.matmul_gflops must be a JSON number, got 'fast'"),
        ({"cpu_count": 2.5}, "DeviceProfile.cpu_count must be a JSON integer, got 2.5"),
        ({"cpu_count": True}, "DeviceProfile.cpu_count must be a JSON integer"),
        ({"total_memory_mb": None}, "DeviceProfile.total_memory_mb must be a JSON number, got None"),
        ({"platform": 7}, "DeviceProfile.platform must be a JSON string"),
        ({"battery_percent": 140.0}, "battery_percent must be in [0, 100]"),
        ({"charging": "false"}, "charging must be true, false or null"),
        ({"has_cuda": 1}, "has_cuda must be true, false or null"),
        ({"matmul_gflops": float("inf")}, "finite"),
    ],
)
def test_from_dict_rejects_bad_input_with_value_error(change, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        DeviceProfile.from_dict({**_profile().to_dict(), **change})


def test_from_dict_names_every_wrong_key_and_the_fix():
    with pytest.raises(ValueError) as info:
        DeviceProfile.from_dict({**_profile().to_dict(), "cpu_count": "four", "machine": None})
    text = str(info.value)
    assert "DeviceProfile.cpu_count" in text and "DeviceProfile.machine" in text
    assert "fedhft devices profile" in text


@pytest.mark.parametrize("key", ["cpu_count", "charging", "battery_percent", "platform"])
def test_from_dict_names_missing_fields(key):
    d = _profile().to_dict()
    del d[key]
    with pytest.raises(ValueError, match=rf"missing required field\(s\) \['{key}'\]"):
        DeviceProfile.from_dict(d)


def test_from_dict_ignores_unknown_keys_under_the_1x_rule():
    """A newer device may add optional keys within schema 1: an older reader ignores them (and the
    parsed profile does not carry them), as it ignores unknown message header keys."""
    p = _profile(battery=40.0, charging=True)
    newer = {**p.to_dict(), "colour": "red", "gpu_memory_mb": 4096, "npu": {"tops": 26}}
    back = DeviceProfile.from_dict(newer)
    assert back == p and back.to_dict() == p.to_dict()
    assert not hasattr(back, "colour")


def test_from_dict_takes_a_profile_without_the_optional_keys():
    d = _profile().to_dict()
    del d["has_cuda"], d["schema_version"]
    assert DeviceProfile.from_dict(d) == _profile()
    assert DeviceProfile.from_dict({**d, "has_cuda": None}).has_cuda is False
    assert DeviceProfile.from_dict({**d, "cpu_count": 4.0}).cpu_count == 4  # a JSON number with an integral value


def test_every_profile_field_has_a_checked_kind():
    assert set(_profiler._PROFILE_KINDS) == {f.name for f in dataclasses.fields(DeviceProfile)}


@pytest.mark.parametrize(
    "mem, gflops, tier",
    [
        (500, 10, "android-low"),
        (600, 25, "android-mid"),
        (800, 30, "rpi5"),
        (1200, 45, "android-high"),
        (8000, 200, "jetson-orin-nano"),
        (8000, 21, "android-mid"),
    ],
)
def test_recommend_tier_picks_the_largest_that_fits(mem, gflops, tier):
    assert recommend_tier(_profile(mem, gflops), load_catalog()) == tier


def test_recommend_tier_says_what_the_smallest_needs():
    with pytest.raises(ValueError, match="smallest tier 'android-low' needs"):
        recommend_tier(_profile(mem=100, gflops=1))


@pytest.mark.parametrize(
    "battery, charging, skip",
    [(None, None, False), (10, False, True), (10, True, False), (10, None, True), (50, False, False)],
)
def test_battery_threshold(battery, charging, skip):
    assert _profile(battery=battery, charging=charging).should_skip_round(30) is skip


def test_devices_imports_nothing_of_ours_nor_torch():
    # profile_device is left out: on a machine with a GPU node it imports torch, on purpose.
    code = (
        "import sys, devices, devices.cli; devices.plan_for(devices.Budget(4000, 50.0), "
        "devices.ModelShape.minilm()); "
        "print(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'fedhft','export','edge_runtime','server','torch'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


_json = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(sorted(_profile().to_dict()) + ["x"]), _json, max_size=12))
def test_from_dict_raises_only_value_error(d):
    # The profile arrives over MQTT from devices we do not control: any JSON object must give a
    # profile or a ValueError, never another exception.
    try:
        DeviceProfile.from_dict(d)
    except ValueError:
        pass
