"""docs/PROTOCOL.md names everything the code defines: every message type and field, every topic,
code, state and encoding, the revision of each added field, and the metric keys the server reads.
A new field or code that the document does not mention fails here."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

import pytest
import yaml

from devices import AdapterPlan, DeviceProfile
from fedhft.protocol import (
    CLIENT_STATES,
    ENCODINGS,
    FROM_CLIENT,
    MASK_TENSOR,
    MESSAGE_TYPES,
    PROTOCOL_MINOR,
    PROTOCOL_VERSION,
    SCALE_SUFFIX,
    SERVER_STATES,
    TO_CLIENT,
    AckStatus,
    Hyper,
    OutcomeKind,
    Reason,
)
from fedhft.protocol._envelope import ENVELOPE_KEYS
from server._metrics import ACCURACY_KEYS, LOSS_KEYS, SHARD_KEYS

ROOT = Path(__file__).resolve().parents[3]
TEXT = (ROOT / "docs" / "PROTOCOL.md").read_text(encoding="utf-8")


def _mentioned(name: str) -> bool:
    """Written as code: `name`, or `Class.name`."""
    return re.search(r"`(?:[A-Za-z_]+\.)?" + re.escape(name) + r"`", TEXT) is not None


def _missing(names) -> list[str]:
    return sorted({str(n) for n in names if not _mentioned(str(n))})


def test_the_title_states_the_version_and_revision():
    assert TEXT.startswith(
        f"# The fedhft wire protocol (schema {PROTOCOL_VERSION}, revision {PROTOCOL_VERSION}.{PROTOCOL_MINOR})"
    )


@pytest.mark.parametrize("type_", sorted(MESSAGE_TYPES))
def test_every_message_type_has_a_section_naming_all_its_fields(type_):
    cls = MESSAGE_TYPES[type_]
    assert f"### `{type_}` ({cls.__name__})" in TEXT
    assert _missing(f.name for f in fields(cls)) == []


def test_the_envelope_hyper_and_the_added_fields():
    assert _missing(ENVELOPE_KEYS) == [] and _missing(Hyper.FIELDS) == []
    for cls in MESSAGE_TYPES.values():
        for name, minor in cls.SINCE.items():
            assert f"`{name}`" in TEXT and f"added in {PROTOCOL_VERSION}.{minor}" in TEXT, name


def test_every_topic_state_code_and_encoding():
    assert _missing(FROM_CLIENT + TO_CLIENT) == []
    assert _missing(CLIENT_STATES + SERVER_STATES) == []
    assert _missing(list(OutcomeKind) + list(AckStatus)) == []
    assert _missing(list(Reason)) == []
    assert _missing(ENCODINGS) == [] and _missing([MASK_TENSOR]) == []
    assert f"`<name>{SCALE_SUFFIX}`" in TEXT


def test_every_channel_address_of_the_asyncapi_document():
    doc = yaml.safe_load((ROOT / "docs" / "asyncapi.yaml").read_text(encoding="utf-8"))
    for channel in doc["channels"].values():
        address = channel["address"].replace("{fleet}", "<fleet>").replace("{client}", "<client>")
        assert f"`{address}`" in TEXT, address


def test_the_metric_keys_the_server_reads():
    assert _missing(ACCURACY_KEYS + LOSS_KEYS + SHARD_KEYS + ("val_examples",)) == []


def test_the_profile_and_plan_keys_a_device_sends_and_reads():
    assert _missing(f.name for f in fields(DeviceProfile)) == []
    assert _missing(f.name for f in fields(AdapterPlan)) == []
