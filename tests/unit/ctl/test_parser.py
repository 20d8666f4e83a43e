"""warrenctl's argument parser, and main()'s one-line error contract."""
from __future__ import annotations

import pytest

from ctl import main as ctl_main
from ctl.main import CliError, build_parser
from ctl.pool import pool_add, pool_remove, pool_show
from ctl.ipamcmd import ipam_info, ipam_release, ipam_show


@pytest.fixture
def parser():
    return build_parser()


def test_pool_add_several_cidrs_and_options(parser):
    args = parser.parse_args(["pool", "add", "10.1.0.0/16", "10.2.0.0/16", "fd00::/64",
                              "--ipip", "--nat-outgoing", "--block-size", "28", "--disabled"])
    assert args.command == "pool" and args.verb == "add"
    assert args.cidrs == ["10.1.0.0/16", "10.2.0.0/16", "fd00::/64"]
    assert args.ipip is True and args.vxlan is False
    assert args.nat_outgoing is True and args.disabled is True
    assert args.block_size == 28
    assert args.func is pool_add


def test_pool_add_defaults(parser):
    args = parser.parse_args(["pool", "add", "10.1.0.0/16"])
    assert (args.ipip, args.vxlan, args.nat_outgoing, args.disabled) == (False,) * 4
    assert args.block_size is None
    assert args.etcd_endpoints is None and args.debug is False


def test_global_options(parser):
    args = parser.parse_args(["--etcd-endpoints", "http://h:1", "--debug", "pool", "show"])
    assert args.etcd_endpoints == "http://h:1" and args.debug is True


def test_pool_add_needs_a_cidr(parser):
    with pytest.raises(CliError, match="required"):
        parser.parse_args(["pool", "add"])


def test_block_size_must_be_int(parser):
    with pytest.raises(CliError, match="--block-size"):
        parser.parse_args(["pool", "add", "10.0.0.0/16", "--block-size", "big"])


def test_ipip_and_vxlan_together_is_an_error(parser):
    with pytest.raises(CliError) as exc:
        parser.parse_args(["pool", "add", "10.0.0.0/16", "--ipip", "--vxlan"])
    msg = str(exc.value)
    assert "--vxlan" in msg and "--ipip" in msg and "not allowed" in msg
    assert "--help" in msg


def test_pool_remove(parser):
    args = parser.parse_args(["pool", "remove", "10.0.0.0/16", "10.1.0.0/16", "--force"])
    assert args.cidrs == ["10.0.0.0/16", "10.1.0.0/16"] and args.force is True
    assert args.func is pool_remove
    assert parser.parse_args(["pool", "remove", "10.0.0.0/16"]).force is False


def test_pool_show_families(parser):
    assert parser.parse_args(["pool", "show"]).version is None
    assert parser.parse_args(["pool", "show", "--ipv4"]).version == 4
    args = parser.parse_args(["pool", "show", "--ipv6", "--json"])
    assert args.version == 6 and args.json is True and args.func is pool_show


def test_pool_show_ipv4_ipv6_exclusive(parser):
    with pytest.raises(CliError, match="not allowed with"):
        parser.parse_args(["pool", "show", "--ipv4", "--ipv6"])


def test_ipam_show_host(parser):
    args = parser.parse_args(["ipam", "show", "--host", "hostA"])
    assert args.command == "ipam" and args.verb == "show"
    assert args.host == "hostA" and args.json is False and args.func is ipam_show
    assert parser.parse_args(["ipam", "show"]).host is None


def test_ipam_show_host_needs_a_value(parser):
    with pytest.raises(CliError, match="--host"):
        parser.parse_args(["ipam", "show", "--host"])


def test_ipam_info_and_release(parser):
    args = parser.parse_args(["ipam", "info", "10.0.0.1", "--json"])
    assert args.ip == "10.0.0.1" and args.json is True and args.func is ipam_info
    args = parser.parse_args(["ipam", "release", "fd00::1"])
    assert args.ip == "fd00::1" and args.func is ipam_release


@pytest.mark.parametrize("argv", [
    ["frobnicate"],
    ["pool", "frobnicate"],
    ["ipam", "frobnicate"],
    [],
    ["pool"],
    ["ipam", "info"],
    ["pool", "show", "--bogus"],
])
def test_bad_command_lines_raise_cli_error(parser, argv):
    with pytest.raises(CliError) as exc:
        parser.parse_args(argv)
    assert "\n" not in str(exc.value)


def test_unknown_command_names_it(parser):
    with pytest.raises(CliError) as exc:
        parser.parse_args(["frobnicate"])
    assert "frobnicate" in str(exc.value)
    assert "warrenctl --help" in str(exc.value)


@pytest.mark.parametrize("argv", [
    ["frobnicate"],
    ["pool", "add", "10.0.0.0/16", "--ipip", "--vxlan"],
    ["pool", "show", "--ipv4", "--ipv6"],
    ["ipam", "show", "--host"],
    ["pool", "add", "10.0.0.1/16"],    # parses, fails validation before touching etcd
    ["pool", "add", "not-a-cidr"],
])
def test_main_bad_args_one_stderr_line(argv, capsys, monkeypatch):
    # Make sure nothing could reach a real etcd even if validation let it through.
    monkeypatch.setenv("WARREN_ETCD_ENDPOINTS", "http://127.0.0.1:1")
    rc = ctl_main.main(argv)
    out, err = capsys.readouterr()
    assert rc == 1
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("warrenctl: error:")
    assert "Traceback" not in err
    assert out == ""


def test_main_host_bits_message(capsys):
    assert ctl_main.main(["pool", "add", "10.0.0.1/16"]) == 1
    err = capsys.readouterr().err
    assert "did you mean 10.0.0.0/16?" in err
