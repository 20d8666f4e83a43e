"""bench/netlink_floor's rtnetlink encoder: the layouts the kernel expects (checked field by field)."""
import socket
import struct

import pytest

from bench import netlink_floor as nl


def _header(msg):
    return struct.unpack_from("=IHHII", msg)


def _attrs(data):
    out, offset = [], 0
    while offset < len(data):
        length, kind = struct.unpack_from("=HH", data, offset)
        out.append((kind, data[offset + 4:offset + length]))
        offset += (length + 3) & ~3
    return out


def test_attr_is_padded_to_four_bytes_and_counts_its_header():
    raw = nl.attr(3, b"eth0\0")
    assert struct.unpack_from("=HH", raw) == (9, 3) and len(raw) == 12 and raw.endswith(b"\0\0\0\0")


def test_new_veth_carries_the_host_side_up_and_the_peer_nested_in_linkinfo():
    msg = nl.new_veth(7, "wrnabc", "tmpabc", "ee:ee:ee:ee:ee:ee", "02:01:02:03:04:05", 1450)
    length, kind, flags, seq, _ = _header(msg)
    assert (length, kind, seq) == (len(msg), nl.RTM_NEWLINK, 7)
    assert flags == nl.NLM_F_REQUEST | nl.NLM_F_ACK | nl.NLM_F_CREATE | nl.NLM_F_EXCL
    family, _type, index, ifflags, change = struct.unpack_from("=BxHiII", msg, 16)
    assert (family, index, ifflags, change) == (socket.AF_UNSPEC, 0, nl.IFF_UP, nl.IFF_UP)
    attrs = dict(_attrs(msg[32:]))
    assert attrs[nl.IFLA_IFNAME] == b"wrnabc\0" and attrs[nl.IFLA_ADDRESS] == b"\xee" * 6
    assert struct.unpack("=I", attrs[nl.IFLA_MTU]) == (1450,)
    info = dict(_attrs(attrs[nl.IFLA_LINKINFO]))
    assert info[nl.IFLA_INFO_KIND] == b"veth\0"
    peer = dict(_attrs(info[nl.IFLA_INFO_DATA]))[nl.VETH_INFO_PEER]
    peer_attrs = dict(_attrs(peer[16:]))  # an ifinfomsg, then the peer's attributes
    assert peer_attrs[nl.IFLA_IFNAME] == b"tmpabc\0" and peer_attrs[nl.IFLA_ADDRESS] == bytes([2, 1, 2, 3, 4, 5])


def test_route_is_a_slash_32_scope_link_proto_80_replace():
    msg = nl.replace_route(3, "10.20.0.5", 42)
    assert _header(msg)[1] == nl.RTM_NEWROUTE and _header(msg)[2] & nl.NLM_F_REPLACE
    family, dst_len, _src, _tos, table, proto, scope, kind, _ = struct.unpack_from("=BBBBBBBBI", msg, 16)
    assert (family, dst_len, table, proto, scope, kind) == (socket.AF_INET, 32, 254, 80, 253, 1)
    attrs = dict(_attrs(msg[28:]))
    assert attrs[nl.RTA_DST] == socket.inet_aton("10.20.0.5") and struct.unpack("=i", attrs[nl.RTA_OIF]) == (42,)


def test_neighbour_is_permanent_on_the_interface():
    msg = nl.replace_neigh(4, "10.20.0.5", "02:00:00:00:00:01", 42)
    family, index, state, _flags, _type = struct.unpack_from("=BxxxiHBB", msg, 16)
    assert (family, index, state) == (socket.AF_INET, 42, nl.NUD_PERMANENT)
    attrs = dict(_attrs(msg[28:]))
    assert attrs[nl.NDA_LLADDR] == bytes([2, 0, 0, 0, 0, 1])


def test_parse_answer_reads_acks_errors_and_link_indexes_of_its_own_request():
    ack = struct.pack("=IHHII", 36, nl.NLMSG_ERROR, 0, 5, 0) + struct.pack("=i", 0) + b"\0" * 16
    err = struct.pack("=IHHII", 36, nl.NLMSG_ERROR, 0, 6, 0) + struct.pack("=i", -17) + b"\0" * 16
    link = struct.pack("=IHHII", 32, nl.RTM_NEWLINK, 0, 7, 0) + struct.pack("=BxHiII", 0, 1, 9, 0, 0)
    assert nl.parse_answer(ack + err + link, 5) == (0, None)
    assert nl.parse_answer(ack + err + link, 6) == (17, None)
    assert nl.parse_answer(ack + err + link, 7) == (0, 9)
    with pytest.raises(ValueError):
        nl.parse_answer(ack, 8)
