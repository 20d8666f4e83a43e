"""warrenctl checksystem on a real node (a warren-lab host) of this machine's kernel."""
from __future__ import annotations

import json
import os

import pytest

from tests.e2e.helpers import E2E, lab_fixture, ctl

pytestmark = E2E


lab = lab_fixture("c", 1)


def host_has_ipip() -> bool:
    return os.path.exists("/sys/module/ipip")


def test_reports_everything_present_but_ipip(lab):
    result = ctl(lab, "host1", "checksystem", "--json", check=False)
    checks = {c["name"]: c for c in json.loads(result.stdout)}
    for name in ("veth", "vxlan", "ipset", "iptables + conntrack + set match", "etcd", "ExaBGP",
                 "dockerd", "plugin"):
        assert checks[name]["ok"], checks[name]
    if not host_has_ipip():
        assert not checks["ipip"]["ok"] and "CONFIG_NET_IPIP" in checks["ipip"]["detail"]
        assert not checks["ipip"]["required"]       # no ipip pool: a warning only
    assert result.returncode == 0
    text = ctl(lab, "host1", "checksystem").stdout
    assert "✔ veth" in text and "✔ etcd" in text


@pytest.mark.skipif(host_has_ipip(), reason="this kernel has ipip")
def test_ipip_becomes_required_with_an_ipip_pool(lab):
    ctl(lab, "host1", "pool", "add", "10.20.80.0/24", "--ipip")
    try:
        result = ctl(lab, "host1", "checksystem", check=False)
        assert result.returncode == 1 and "✘ ipip" in result.stdout and "missing: ipip" in result.stderr
        ctl(lab, "host1", "node", "stop", "--name", "host1")
        refused = ctl(lab, "host1", "node", "start", "--name", "host1", check=False)
        assert refused.returncode == 1 and "CONFIG_NET_IPIP" in refused.stderr
        errors = [line for line in refused.stderr.splitlines() if not line.startswith("warrenctl: warning:")]
        assert len(errors) == 1, refused.stderr  # one error line (warnings, e.g. plain-HTTP etcd, aside)
    finally:
        ctl(lab, "host1", "pool", "remove", "10.20.80.0/24")
        ctl(lab, "host1", "node", "start", "--name", "host1")
