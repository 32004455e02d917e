"""The reply headers built once for a plain reply (node.sizing.plain_headers), their wire bytes
(node.sizing.header_block: what nats-py sends) and the size check that uses their precomputed
wire size (node.sizing.check_size): the same rule as sizing.check."""

from __future__ import annotations

import pytest

from contracts.subjects import MSGPACK
from node import sizing


@pytest.mark.parametrize("kind", ["application/json", MSGPACK])
def test_plain_headers_are_the_content_type_alone_with_their_wire_size(kind):
    headers, size, block = sizing.plain_headers(kind)
    assert dict(headers) == {"Content-Type": kind}
    assert block == f"NATS/1.0\r\nContent-Type: {kind}\r\n\r\n".encode()
    assert size == sizing.header_bytes(headers) == len(block)
    assert sizing.plain_headers(kind).headers is headers  # built once


def test_the_header_block_is_encoded_as_nats_py_encodes_headers():
    headers = {" Spaced ": " value ", "Broken": "a\r\nb", "": "skipped", "Strategy-Error-Code": "TIMEOUT"}
    block = sizing.header_block(headers)
    assert block == b"NATS/1.0\r\nSpaced: value\r\nBroken: a  b\r\nStrategy-Error-Code: TIMEOUT\r\n\r\n"
    assert len(block) == sizing.header_bytes(headers)


def test_check_size_refuses_exactly_what_check_refuses():
    headers, size, _block = sizing.plain_headers("application/json")
    limit = 1000
    fits = b"x" * (limit - size)
    sizing.check(limit, fits, headers)
    sizing.check_size(limit, size + len(fits))
    with pytest.raises(sizing.TooLarge):
        sizing.check(limit, fits + b"x", headers)
    with pytest.raises(sizing.TooLarge) as caught:
        sizing.check_size(limit, size + len(fits) + 1, "the reply")
    assert "the reply" in str(caught.value) and caught.value.size == limit + 1
