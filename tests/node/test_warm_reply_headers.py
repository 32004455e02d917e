"""The reply headers built once for a plain reply (node.sizing.plain_headers) and the size check
that uses their precomputed wire size (node.sizing.check_size): the same rule as sizing.check."""

from __future__ import annotations

import pytest

from contracts.subjects import MSGPACK
from node import sizing


@pytest.mark.parametrize("kind", ["application/json", MSGPACK])
def test_plain_headers_are_the_content_type_alone_with_their_wire_size(kind):
    headers, size = sizing.plain_headers(kind)
    assert dict(headers) == {"Content-Type": kind}
    assert size == sizing.header_bytes(headers) == len(f"NATS/1.0\r\nContent-Type: {kind}\r\n\r\n".encode())
    assert sizing.plain_headers(kind)[0] is headers  # built once


def test_check_size_refuses_exactly_what_check_refuses():
    headers, size = sizing.plain_headers("application/json")
    limit = 1000
    fits = b"x" * (limit - size)
    sizing.check(limit, fits, headers)
    sizing.check_size(limit, size + len(fits))
    with pytest.raises(sizing.TooLarge):
        sizing.check(limit, fits + b"x", headers)
    with pytest.raises(sizing.TooLarge) as caught:
        sizing.check_size(limit, size + len(fits) + 1, "the reply")
    assert "the reply" in str(caught.value) and caught.value.size == limit + 1
