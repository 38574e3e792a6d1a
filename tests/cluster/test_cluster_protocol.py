"""The inter-node message format and the key layout (no Redis needed, except
to check that the Lua scripts encode identities exactly as Python does)."""

from __future__ import annotations

import logging
import random

import pytest
from redisserver import RedisServer

from ocpp_rpc.cluster._protocol import (
    VERSION,
    Call,
    Cancel,
    ClusterEvent,
    Layout,
    Replace,
    Reply,
    decode,
    encode,
    encode_identity,
)


@pytest.mark.parametrize(
    "message",
    [
        Call("a-1", "node-1", "CP:ü", "Reset", {"type": "Hard"}, 12.5),
        Call("a-2", "node-1", "", "X", None, 0.0),
        Reply("a-1", "node-2", "result", value={"status": "Accepted"}),
        Reply("a-1", "node-2", "result", value=None),
        Reply("a-1", "node-2", "error", code="NotSupported", message="no", details={"k": [1]}),
        Reply("a-1", "node-2", "closed", code=1001, message="going away"),
        Reply("a-1", "node-2", "timeout"),
        Reply("a-1", "node-2", "absent"),
        Cancel("a-1", "node-1"),
    ],
)
def test_round_trip(message: Call | Reply | Cancel) -> None:
    text = encode(message)
    assert f'"v":{VERSION}' in text
    assert decode(text) == message
    assert decode(text.encode()) == message


def test_messages_written_by_the_scripts() -> None:
    replace = '{"v":1,"k":"replace","identity":"CP\\/1","conn":"c1","by":"n2"}'
    assert decode(replace) == Replace("CP/1", "c1", "n2")
    event = '{"v":1,"k":"connected","identity":"CP1","node":"n","proto":"","ts":["17","250000"]}'
    assert decode(event) == ClusterEvent("connected", "CP1", "n", None, 17.25)


@pytest.mark.parametrize(
    "text",
    [
        '{"v":2,"k":"call","id":"1","from":"n","identity":"CP","method":"M","timeout":1}',
        '{"k":"call"}',
        "not json",
        "[1, 2]",
        '{"v":1,"k":"call","id":1,"from":"n","identity":"CP","method":"M","timeout":1}',
        '{"v":1,"k":"call","id":"1","from":"n","identity":"CP","method":"M","timeout":true}',
        '{"v":1,"k":"reply","id":"1","from":"n","outcome":"maybe"}',
        '{"v":1,"k":"reply","id":"1","from":"n","outcome":"closed","code":"x"}',
        '{"v":1,"k":"connected","identity":"CP","node":"n","ts":"now"}',
        '{"v":1,"k":"gossip"}',
    ],
)
def test_unknown_or_malformed_messages_are_dropped_and_logged(
    text: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, "ocpp_rpc.cluster"):
        assert decode(text) is None
    assert len(caplog.records) == 1
    assert "dropping" in caplog.records[0].getMessage()


def test_layout() -> None:
    layout = Layout("csms-a")
    assert layout.registration("CP:1/x") == "csms-a:id:CP%3A1%2Fx"
    assert layout.lease("n1") == "csms-a:node:n1"
    assert layout.inbox("n1") == "csms-a:inbox:n1"
    assert layout.instance("ab12") == "csms-a:inst:ab12"
    assert (layout.nodes, layout.events) == ("csms-a:nodes", "csms-a:events")
    # No two identities share a key, and no key part after the prefix has a ":".
    identities = ["a:b", "a%3Ab", "a%253Ab", "", " ", "%", "ä", "a\u0000b"]
    keys = {layout.registration(i) for i in identities}
    assert len(keys) == len(identities)
    assert all(":" not in key.split(":", 2)[2] for key in keys)


@pytest.mark.anyio
async def test_the_scripts_encode_identities_like_python(redis: RedisServer) -> None:
    import coredis

    from ocpp_rpc.cluster import _scripts

    rng = random.Random(14)
    samples = ["", "CP:1", "a b", "%", "~._-", "ünï☃", "{x}", "\n\t", "𝄞"] + [
        "".join(chr(rng.choice([rng.randrange(32, 127), rng.randrange(0x80, 0x3000)]))
                for _ in range(rng.randrange(1, 20)))
        for _ in range(200)
    ]
    async with coredis.Redis.from_url(redis.url, decode_responses=True) as db:
        script = db.register_script(
            _scripts._PRELUDE + "local out = {} for i, s in ipairs(ARGV) do "
            "out[i] = enc(s) end return out"
        )
        encoded = await script(keys=[], args=samples)
    assert list(encoded) == [encode_identity(sample) for sample in samples]
