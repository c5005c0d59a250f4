"""Topic tree, id validation, parse, and the Mosquitto ACL text."""

from __future__ import annotations

import pytest

from fedhft.protocol import FROM_CLIENT, KIND_MESSAGE, MESSAGE_TYPES, TO_CLIENT, TopicError, Topics, acl_lines, valid_id

T = Topics("demo")


@pytest.mark.parametrize(
    "topic, expected",
    [
        (T.server_status, "fedhft/v1/demo/server/status"),
        (T.hello("c1"), "fedhft/v1/demo/from/c1/hello"),
        (T.status("c1"), "fedhft/v1/demo/from/c1/status"),
        (T.update("c1"), "fedhft/v1/demo/from/c1/update"),
        (T.outcome("c1"), "fedhft/v1/demo/from/c1/outcome"),
        (T.bundle_req("c1"), "fedhft/v1/demo/from/c1/bundle_req"),
        (T.task("c1"), "fedhft/v1/demo/to/c1/task"),
        (T.ack("c1"), "fedhft/v1/demo/to/c1/ack"),
        (T.bundle("c1"), "fedhft/v1/demo/to/c1/bundle"),
    ],
)
def test_topic_names(topic, expected):
    assert topic == expected


@pytest.mark.parametrize("kind", FROM_CLIENT + TO_CLIENT)
def test_parse_round_trips(kind):
    assert T.parse(getattr(T, kind)("dev_42-x")) == (kind, "dev_42-x")
    assert KIND_MESSAGE[kind] in MESSAGE_TYPES


def test_parse_server_status():
    assert T.parse("fedhft/v1/demo/server/status") == ("server_status", None)


@pytest.mark.parametrize(
    "topic",
    [
        "fedhft/v1/other/from/c1/update",
        "fedhft/v1/demo/from/c1/task",  # a device-bound kind under from/
        "fedhft/v1/demo/to/c1/update",
        "fedhft/v1/demo/from/+/update",
        "fedhft/v1/demo/from/c1/update/extra",
        "fedhft/v1/demo/from//update",
        "fedhft/v1/demo",
        "fedhft/v1/demox/server/status",
        "",
        None,
    ],
)
def test_parse_rejects_foreign_topics(topic):
    with pytest.raises(TopicError):
        T.parse(topic)


@pytest.mark.parametrize("bad", ["", "a/b", "a+b", "#", "$SYS", "a b", "x" * 65, "é", None, 3])
def test_invalid_ids(bad):
    with pytest.raises(TopicError, match="not a valid id"):
        valid_id(bad)
    with pytest.raises(TopicError):
        Topics(bad)
    with pytest.raises(TopicError):
        T.update(bad)


def test_subscriptions():
    assert T.all_from("update") == "fedhft/v1/demo/from/+/update"
    assert T.server_subscriptions() == [f"fedhft/v1/demo/from/+/{k}" for k in FROM_CLIENT]
    assert T.client_subscriptions("c1") == ["fedhft/v1/demo/to/c1/#", "fedhft/v1/demo/server/status"]
    assert T.shared(T.all_from("update"), "aggregators") == "$share/aggregators/fedhft/v1/demo/from/+/update"
    with pytest.raises(TopicError, match="use one of"):
        T.all_from("task")


def test_acl_lines():
    lines = acl_lines("demo", "fedhft-server")
    assert "pattern write fedhft/v1/demo/from/%u/#" in lines
    assert "pattern read fedhft/v1/demo/to/%u/#" in lines
    assert "pattern read fedhft/v1/demo/server/#" in lines
    user = lines.index("user fedhft-server")
    assert lines[user + 1] == "topic readwrite fedhft/v1/demo/#"
    # every device rule precedes the first user line or is a pattern (topic lines there would be anonymous-only)
    assert all(not line.startswith("topic ") for line in lines[:user])
    with pytest.raises(TopicError):
        acl_lines("demo", "bad/user")
