import base64

import pytest

from bgp.config import (Peer, SpeakerConfig, check_as, check_password, check_peer_address, environment,
                        render)


def config(**kw):
    base = dict(node="n1", router_id="198.19.0.11",
                peers=(Peer("198.19.0.12", 64512), Peer("198.19.0.11", 64512), Peer("198.19.0.13", 64512)),
                api_argv=("/venv/bin/python", "-m", "bgp.api", "--node", "n1"))
    base.update(kw)
    return SpeakerConfig(**base)


def test_render_full_mesh():
    text = render(config())
    assert "run /venv/bin/python -m bgp.api --node n1;" in text
    assert "neighbor 198.19.0.12 {" in text and "neighbor 198.19.0.13 {" in text
    assert "neighbor 198.19.0.11 {" not in text  # never peer with ourselves
    assert "hold-time 30;" in text and "manual-eor true;" in text and "local-address 198.19.0.11;" in text
    assert "family { ipv4 unicast; ipv6 unicast; }" in text


def exabgp_tokens(text):
    """The words ExaBGP's own tokeniser reads from ``text`` (one list per statement)."""
    from exabgp.configuration.core.format import tokens
    return [[word for _, _, word in parsed] for parsed in tokens(iter(text.splitlines()))]


@pytest.mark.parametrize("password", ["it's a secret", 'say "hi"', "back\\slash", "semi;colon {x} #no",
                                      "~!@$%^&*()_+`-=[]|:<>?,./", "x" * 80, " lead and trail "])
def test_any_printable_password_reaches_exabgp_intact(password):
    text = render(config(peers=(Peer("198.19.0.12", 64512, password=password),)))
    assert password not in text
    statements = exabgp_tokens(text)
    md5 = next(s for s in statements if s[0] == "md5-password")
    assert md5[2:] == [";"] and base64.b64decode(md5[1], validate=True) == password.encode()
    assert ["md5-base64", "true", ";"] in statements
    # the apostrophe used to toggle the tokeniser's quoting: every statement still ends where it should
    assert sum(1 for s in statements if s[0] == "neighbor") == 1


@pytest.mark.parametrize("bad", [
    dict(api_argv=("python", "--vtep", "a=b,c=d")),   # commas split the run line
    dict(api_argv=("python", "a b")),
    dict(api_argv=("python", "ok\n")),
    dict(node="n1;x"),
    dict(router_id="not-an-ip"),
    dict(router_id="0.0.0.0"),
    dict(hold_time=1),
    dict(hold_time=70000),
    dict(as_number=0),
    dict(as_number=2**32),
    dict(peers=(Peer("198.19.0.12", 0),)),
    dict(peers=(Peer("198.19.0.12", 2**32),)),
    dict(peers=(Peer("198.19.0.12", True),)),
    dict(peers=(Peer("198.19.0.12", 64512, password="caf\u00e9"),)),   # not ASCII
    dict(peers=(Peer("198.19.0.12", 64512, password="a\nb"),)),
    dict(peers=(Peer("198.19.0.12", 64512, password="x" * 81),)),
    dict(peers=(Peer("198.19.0.12", 64512, password=""),)),
    dict(peers=(Peer("198.19.0.12; }", 64512),)),
    dict(peers=(Peer("0.0.0.0", 64512),)),
    dict(peers=(Peer("198.19.0.12", 64512, kind='x" }'),)),
    dict(peers=(Peer("198.19.0.12", 64512), Peer("198.19.0.12", 65000))),
])
def test_invalid_configs_are_refused_before_exabgp_sees_them(bad):
    with pytest.raises(ValueError):
        render(config(**bad))


@pytest.mark.parametrize("address", ["0.0.0.0", "::", "127.0.0.1", "::1", "224.0.0.5", "ff02::2", "fe80::1",
                                     "169.254.0.1", "255.255.255.255", "240.0.0.1", "fe80::1%eth0",
                                     "::ffff:10.0.0.1", "10.0.0.01", "", "10.0.0.0/24", None, 5])
def test_unusable_peer_addresses(address):
    with pytest.raises(ValueError):
        check_peer_address(address)


def test_peer_addresses_are_canonical():
    assert check_peer_address("2001:DB8:0::0:1") == "2001:db8::1"
    assert check_peer_address("198.19.0.12") == "198.19.0.12"


def test_as_and_password_bounds():
    assert check_as(1) == 1 and check_as(2**32 - 1) == 2**32 - 1
    for bad in (0, -1, 2**32, "64512", 1.0, True, None):
        with pytest.raises(ValueError):
            check_as(bad)
    assert check_password("it's") == "it's"
    for bad in ("", "x" * 81, "tab\there", "\u00e9", None, 5):
        with pytest.raises(ValueError):
            check_password(bad)


def test_environment_runs_as_root_and_listens():
    env = environment(config(), "/log/exabgp.log", "/run")
    assert env["exabgp_tcp_bind"] == "198.19.0.11" and env["exabgp_daemon_user"] == "root"


def test_environment_turns_off_exabgps_line_per_route():
    env = environment(config(), "/log/exabgp.log", "/run")
    assert env["exabgp_log_processes"] == "false"      # ~1000 log lines per 1000-route burst otherwise
    assert env["exabgp_api_ack"] == "true"             # the API process paces its commands by the acks
