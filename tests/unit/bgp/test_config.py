import pytest

from bgp.config import Peer, SpeakerConfig, environment, render


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


@pytest.mark.parametrize("bad", [
    dict(api_argv=("python", "--vtep", "a=b,c=d")),   # commas split the run line
    dict(router_id="not-an-ip"),
    dict(hold_time=1),
    dict(peers=(Peer("198.19.0.12", 64512, password='x"y'),)),
])
def test_invalid_configs_are_refused_before_exabgp_sees_them(bad):
    with pytest.raises(ValueError):
        render(config(**bad))


def test_environment_runs_as_root_and_listens():
    env = environment(config(), "/log/exabgp.log", "/run")
    assert env["exabgp_tcp_bind"] == "198.19.0.11" and env["exabgp_daemon_user"] == "root"


def test_environment_turns_off_exabgps_line_per_route():
    env = environment(config(), "/log/exabgp.log", "/run")
    assert env["exabgp_log_processes"] == "false"      # ~1000 log lines per 1000-route burst otherwise
    assert env["exabgp_api_ack"] == "true"             # the API process paces its commands by the acks
