"""A compact MaxMind DB writer for tests: an IPv6 tree (IPv4 under ::/96) of 24-bit records
mapping networks to {"country": {"iso_code": CC}}. Enough to build a country database that
libmaxminddb reads, without shipping binary fixtures."""
import ipaddress
import struct
import time


def _ctrl(type_, size):
    # Types above 7 are "extended": type 0 in the control byte, type - 7 in the next byte.
    if size >= 29:
        raise ValueError("sizes of 29 and more are not needed here")
    if type_ <= 7:
        return bytes([(type_ << 5) | size])
    return bytes([size, type_ - 7])


def enc(value):
    if isinstance(value, str):
        b = value.encode()
        return _ctrl(2, len(b)) + b
    if isinstance(value, dict):
        out = _ctrl(7, len(value))
        for k, v in value.items():
            out += enc(k) + enc(v)
        return out
    if isinstance(value, list):
        out = _ctrl(11, len(value))
        for v in value:
            out += enc(v)
        return out
    if isinstance(value, tuple):  # (type, int)
        kind, n = value
        b = n.to_bytes((n.bit_length() + 7) // 8, "big") if n else b""
        return _ctrl({"u16": 5, "u32": 6, "u64": 9}[kind], len(b)) + b
    raise TypeError(type(value))


def write(path, networks, database_type="Keygate-Test-Country", build_epoch=None):
    """networks: list of (cidr string, country code)."""
    data = b""
    offsets = {}
    for _, cc in networks:
        if cc not in offsets:
            offsets[cc] = len(data)
            data += enc({"country": {"iso_code": cc}})
    nodes = [[None, None]]  # a child is ("node", i), ("data", cc) or None

    def insert(bits, cc):
        node = 0
        for depth, bit in enumerate(bits):
            last = depth == len(bits) - 1
            child = nodes[node][bit]
            if last:
                nodes[node][bit] = ("data", cc)
                return
            if child is None or child[0] == "data":
                nodes.append([child, child])  # a shorter network keeps covering the rest
                nodes[node][bit] = ("node", len(nodes) - 1)
            node = nodes[node][bit][1]

    for cidr, cc in sorted(networks, key=lambda n: ipaddress.ip_network(n[0]).prefixlen):
        net = ipaddress.ip_network(cidr)
        if net.version == 4:
            value, plen = int(net.network_address), 96 + net.prefixlen
        else:
            value, plen = int(net.network_address), net.prefixlen
        bits = [(value >> (127 - i)) & 1 for i in range(plen)]
        insert(bits, cc)
    count = len(nodes)

    def record(child):
        if child is None:
            return count
        if child[0] == "node":
            return child[1]
        return count + 16 + offsets[child[1]]

    tree = b""
    for left, right in nodes:
        tree += record(left).to_bytes(3, "big") + record(right).to_bytes(3, "big")
    meta = {
        "binary_format_major_version": ("u16", 2),
        "binary_format_minor_version": ("u16", 0),
        "build_epoch": ("u64", build_epoch or int(time.time()) - 86400),
        "database_type": database_type,
        "description": {"en": "keygate test database"},
        "ip_version": ("u16", 6),
        "languages": ["en"],
        "node_count": ("u32", count),
        "record_size": ("u16", 24),
    }
    with open(path, "wb") as f:
        f.write(tree + b"\x00" * 16 + data + b"\xab\xcd\xefMaxMind.com" + enc(meta))
