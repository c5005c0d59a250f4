"""The update encoding a task asks for (hyper.encoding) is enforced: another one is rejected with
``wrong_encoding``, never stored (an fp32 update used to be stored when fp16 was asked)."""

from __future__ import annotations

import pytest

from fedhft.protocol import Ack, Reason, decode, encode
from server import Rejected, check_update, intake_context, synthetic_update

from .server_fakes import Harness, fake_bundles, make_config


@pytest.fixture
def bundles(tmp_path):
    return fake_bundles(tmp_path / "bundles")


def test_an_update_in_another_encoding_is_rejected_and_not_stored(tmp_path, bundles):
    h = Harness(tmp_path / "state", make_config(bundles, rounds=1, update_encoding="fp16"))
    h.join()
    tasks = h.open_tasks()
    assert {t.hyper.encoding for t in tasks.values()} == {"fp16"}
    mid = h.answer(tasks["dev-000"], encoding="fp32")
    h.answer(tasks["dev-001"])  # the asked encoding
    assert mid in h.transport.acked  # acknowledged: the broker must not redeliver it forever
    (rej,) = h.store.rejections()
    assert rej["client"] == "dev-000" and rej["reason"] == Reason.WRONG_ENCODING
    assert "encoded fp32 but its task asked for fp16" in rej["detail"]
    assert h.store.stored_digest(0, "dev-000") is None and h.store.stored_digest(0, "dev-001") is not None
    assert h.coord.round.status["dev-000"] == "rejected"  # final: the round does not wait for it
    ack = [decode(p) for t, p, _ in h.transport.published if t.endswith("/dev-000/ack")][-1]
    assert isinstance(ack, Ack) and ack.status == "rejected" and ack.reason.startswith("wrong_encoding")


@pytest.mark.parametrize("asked, sent", [("fp16", "int8"), ("int8", "fp32"), ("fp32", "fp16")])
def test_check_update_names_both_encodings(tmp_path, bundles, asked, sent):
    h = Harness(tmp_path / "state", make_config(bundles, rounds=1, update_encoding=asked))
    h.join()
    task = h.open_tasks()["dev-001"]
    r = h.coord.round
    ctx = intake_context(h.coord.config, r.idx, True, r.expected(h.coord.strategy.dims_for), lambda c: None)
    verdict = check_update("dev-001", encode(synthetic_update(task, encoding=sent)), ctx)
    assert isinstance(verdict, Rejected) and verdict.reason == "wrong_encoding" and verdict.final
    assert f"encoded {sent} but its task asked for {asked}" in verdict.rejection.detail
    assert not isinstance(check_update("dev-001", encode(synthetic_update(task)), ctx), Rejected)
