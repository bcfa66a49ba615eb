"""The raw-byte fixtures of tests/fixtures/http, replayed over a socket to a running gate."""
import json
import os
import socket
import time

import pytest

from conftest import raw_exchange, read_response

FOLDER = os.path.join(os.path.dirname(__file__), "../fixtures/http")


def fixtures():
    for name in sorted(os.listdir(FOLDER)):
        with open(os.path.join(FOLDER, name), "rb") as f:
            data = f.read()
        header, _, raw = data.partition(b"\n")
        _, _, expect, layer = header.decode().split(" ")
        yield name[:-5], int(expect), raw


@pytest.fixture(scope="module")
def running(tmp_path_factory):
    from conftest import Gate
    from upstream import Upstream
    up = Upstream()
    g = Gate(str(tmp_path_factory.mktemp("fixtures")), up.port)
    key = g.create_key()["key"]
    g.start()
    yield g, up, key
    g.stop()
    up.stop()


@pytest.mark.parametrize("name,expect,raw", list(fixtures()), ids=[f[0] for f in fixtures()])
def test_fixture_over_socket(running, name, expect, raw):
    gate, upstream, key = running
    before = len(upstream.requests)
    raw = raw.replace(b"Host: x\r\n", b"Host: x\r\nx-api-key: " + key.encode() + b"\r\n", 1)
    out = raw_exchange(gate.port, raw, read_timeout=2.0)
    status = int(out.split(b" ", 2)[1]) if out.startswith(b"HTTP/1.1 ") else 0
    assert status == expect, (name, out[:300])
    if expect >= 400:
        assert b"Connection: close" in out.split(b"\r\n\r\n")[0], name
        assert out.count(b"HTTP/1.1 ") == 1, name  # nothing smuggled behind the refusal
        if name not in ("chunk-size-bad", "chunk-ext-bad", "chunk-ext-long", "chunk-bare-lf", "chunk-missing-crlf", "trailer-bad",
                        "chunk-size-overflow"):
            assert len(upstream.requests) == before, name  # refused before anything was forwarded
    if name == "forged-identity":
        seen = {k.lower(): v for k, v in json.loads(out.split(b"\r\n\r\n", 1)[1])["headers"]}
        assert seen.get("x-keygate-key-id") != "forged" and "x_keygate_owner" not in seen and "x-real-ip" not in seen
        assert seen["x-forwarded-for"] == "127.0.0.1"
    if name == "hop-by-hop-ok":
        seen = {k.lower() for k, _ in json.loads(out.split(b"\r\n\r\n", 1)[1])["headers"]}
        assert not seen & {"connection", "keep-alive", "te", "upgrade", "x-drop"}


def cut_after_each_cr(raw):
    """The bytes in pieces that each end with a CR, so every CRLF is split across two reads."""
    pieces, start = [], 0
    for i, b in enumerate(raw):
        if b == 0x0D:
            pieces.append(raw[start:i + 1])
            start = i + 1
    return pieces + [raw[start:]]


@pytest.mark.parametrize("name,expect,raw", list(fixtures()), ids=[f[0] for f in fixtures()])
def test_fixture_with_every_crlf_split_across_reads(running, name, expect, raw):
    """The same answer when each CR reaches the gate in one read and what follows it in the next."""
    gate, upstream, key = running
    raw = raw.replace(b"Host: x\r\n", b"Host: x\r\nx-api-key: " + key.encode() + b"\r\n", 1)
    s = socket.create_connection(("127.0.0.1", gate.port), timeout=2.0)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    f = s.makefile("rb")
    try:
        for piece in cut_after_each_cr(raw):
            if piece:
                s.sendall(piece)
                time.sleep(0.003)
        status, _, body = read_response(f)
        assert status == expect, (name, body[:300])
        if expect >= 400:
            assert f.read() == b"", name  # the gate closed: nothing smuggled behind the refusal
            # The same reason as when the bytes arrive in one read.
            whole = json.loads(raw_exchange(gate.port, raw, read_timeout=2.0).split(b"\r\n\r\n", 1)[1])
            refusal = json.loads(body)
            assert (refusal["error"], refusal["message"]) == (whole["error"], whole["message"]), name
    finally:
        f.close()
        s.close()
