"""etcd with client-certificate TLS: Warren nodes use WARREN_ETCD_CA/CERT/KEY and never plain text.

The lab (``conftest.ops_lab``) made a CA, member and client certificates with
openssl, and its 3 etcd members serve https only and require a client
certificate. The nodes on both hosts were started with the TLS variables and
every endpoint. The refusals are checked from both sides: Warren refuses to
use an http:// endpoint when TLS is configured, and the members refuse plain
text, a client without a certificate and a client that does not trust their CA.
"""
from __future__ import annotations

import subprocess
import time

import pytest

from ctl.lab import Lab
from tests.e2e.helpers import E2E, REPO, address, ctl, dk, pings, run
from tests.e2e.ops.conftest import remove

pytestmark = E2E

# Where a node start that must fail would put its plugin socket if it did not fail:
# never the host's real plugin socket.
SPARE_SOCKET = "/run/warren-tls-test.sock"


def warrenctl(lab: Lab, host: str, *args: str, env: dict[str, str] | None = None,
              unset: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    argv = ["env", *[f"--unset={v}" for v in unset], *[f"{k}={v}" for k, v in (env or {}).items()],
            "warrenctl", *args]
    return lab.exec(host, argv, timeout=90, cwd=REPO, stdin=subprocess.DEVNULL)


def one_line_error(res: subprocess.CompletedProcess) -> str:
    assert res.returncode != 0, res.stdout
    assert "Traceback" not in res.stderr
    lines = res.stderr.splitlines()
    assert lines and lines[-1].startswith("warrenctl: error: "), res.stderr
    return lines[-1]


@pytest.fixture(scope="module")
def tls_lab(ops_lab):
    return ops_lab


def test_nodes_use_tls_to_every_member(tls_lab):
    st = tls_lab.status()
    assert st["etcd_tls"] and len(st["etcd_endpoints"]) == 3
    assert all(e.startswith("https://") for e in st["etcd_endpoints"])
    env = tls_lab.exec("host1", ["sh", "-c", "echo $WARREN_ETCD_ENDPOINTS $WARREN_ETCD_CA $WARREN_ETCD_CERT"])
    endpoints, ca, cert = env.stdout.split()
    assert endpoints.split(",") == st["etcd_endpoints"] and ca.endswith("/pki/ca.crt")
    assert cert.endswith("/pki/client.crt")
    for host in ("host1", "host2"):
        assert sum(tls_lab.etcd_connections(host).values()) > 0, host  # the node is connected
    names = ctl(tls_lab, "host1", "node", "show").stdout
    assert "host1" in names and "host2" in names


def test_containers_work_on_nodes_using_tls(tls_lab):
    for host in ("host1", "host2"):
        dk(tls_lab, host, "network", "create", "-d", "warren", "--ipam-driver", "warren",
           "--subnet", "10.20.65.0/24", "tls65")
    try:
        run(tls_lab, "host1", "tls-a", "tls65")
        run(tls_lab, "host2", "tls-b", "tls65")
        target = address(tls_lab, "host2", "tls-b", "tls65")
        assert target.startswith("10.20.65.")
        deadline = time.monotonic() + 90
        while not pings(tls_lab, "host1", "tls-a", target):
            assert time.monotonic() < deadline, "no ping over a fabric whose nodes use TLS"
            time.sleep(1)
    finally:
        remove(tls_lab, "host1", ["tls-a"], ["tls65"])
        remove(tls_lab, "host2", ["tls-b"], ["tls65"])


def test_plain_http_endpoints_are_refused_when_tls_is_configured(tls_lab):
    plain = ",".join(e.replace("https://", "http://") for e in tls_lab.status()["etcd_endpoints"])
    for args in (["pool", "show"], ["node", "start", "--name", "tlsx", "--no-bgp", "--socket", SPARE_SOCKET]):
        line = one_line_error(warrenctl(tls_lab, "host1", *args, env={"WARREN_ETCD_ENDPOINTS": plain}))
        assert "plain http://" in line and len(line.splitlines()) == 1
    line = one_line_error(warrenctl(tls_lab, "host1", "--etcd-endpoints", plain, "pool", "show"))
    assert "plain http://" in line


def test_members_refuse_plain_text(tls_lab):
    plain = tls_lab.status()["etcd_endpoints"][0].replace("https://", "http://")
    res = warrenctl(tls_lab, "host1", "pool", "show", env={"WARREN_ETCD_ENDPOINTS": plain, "WARREN_ETCD_TIMEOUT": "3"},
                    unset=("WARREN_ETCD_CA", "WARREN_ETCD_CERT", "WARREN_ETCD_KEY"))
    assert "etcd is unreachable" in one_line_error(res)


def test_members_refuse_a_client_without_certificate(tls_lab):
    res = warrenctl(tls_lab, "host1", "pool", "show", env={"WARREN_ETCD_TIMEOUT": "3"},
                    unset=("WARREN_ETCD_CERT", "WARREN_ETCD_KEY"))
    one_line_error(res)


@pytest.fixture(scope="module")
def wrong_ca(tmp_path_factory):
    d = tmp_path_factory.mktemp("wrong-ca")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-days", "1", "-subj", "/CN=not the lab's CA", "-keyout", str(d / "ca.key"),
                    "-out", str(d / "ca.crt")], check=True, capture_output=True, timeout=60)
    return str(d / "ca.crt")


def test_a_node_with_a_wrong_ca_fails_clearly(tls_lab, wrong_ca):
    res = warrenctl(tls_lab, "host1", "node", "start", "--name", "wrongca", "--no-bgp",
                    "--socket", SPARE_SOCKET,
                    env={"WARREN_ETCD_CA": wrong_ca, "WARREN_ETCD_TIMEOUT": "3"})
    line = one_line_error(res)
    assert "etcd is unreachable" in line and "CERTIFICATE_VERIFY_FAILED" in line
    assert all(e.replace("https://", "") in line for e in tls_lab.status()["etcd_endpoints"])
    assert "wrongca" not in ctl(tls_lab, "host1", "node", "show").stdout   # nothing was registered


def test_a_wrong_ca_is_one_line_on_stderr(tls_lab, wrong_ca):
    res = warrenctl(tls_lab, "host1", "pool", "show", env={"WARREN_ETCD_CA": wrong_ca, "WARREN_ETCD_TIMEOUT": "3"})
    one_line_error(res)
    assert res.stderr.count("\n") == 1, res.stderr
