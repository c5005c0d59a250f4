"""docs/CONTRACTS.md, the short form of the protocol, names every envelope key the decoders require
(``body_len`` was once left out of it)."""

from __future__ import annotations

from pathlib import Path

from fedhft.protocol._envelope import ENVELOPE_KEYS

TEXT = (Path(__file__).resolve().parents[3] / "docs" / "CONTRACTS.md").read_text(encoding="utf-8")


def test_every_envelope_key_is_named():
    assert [k for k in ENVELOPE_KEYS if f"`{k}`" not in TEXT] == []
