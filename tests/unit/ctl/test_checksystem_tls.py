"""checksystem's etcd TLS warning (issue 12): an etcd off loopback without TLS and a client certificate."""
from __future__ import annotations

from ctl.checksystem import etcd_tls_check
from datastore import EtcdConfig


def config(urls: str, **tls) -> EtcdConfig:
    return EtcdConfig.from_env({"WARREN_ETCD_ENDPOINTS": urls, **tls})


def test_loopback_needs_nothing():
    for urls in ("http://127.0.0.1:2379", "http://localhost:2379", "http://[::1]:2379"):
        check = etcd_tls_check(config(urls))
        assert check.ok and not check.required, urls


def test_plain_http_off_loopback_is_a_warning():
    check = etcd_tls_check(config("http://127.0.0.1:2379,http://198.19.0.1:2379"))
    assert not check.ok and not check.required
    assert "http://198.19.0.1:2379 is not on loopback and not TLS" in check.detail
    assert "127.0.0.1" not in check.detail and "WARREN_ETCD_CERT" in check.fix
    assert "\n" not in check.detail


def test_tls_without_then_with_a_client_certificate(tmp_path):
    for name in ("ca.crt", "client.crt", "client.key"):
        (tmp_path / name).write_text("x")
    ca = {"WARREN_ETCD_CA": str(tmp_path / "ca.crt")}
    check = etcd_tls_check(config("https://etcd.example:2379", **ca))
    assert not check.ok and "without a client certificate" in check.detail
    check = etcd_tls_check(config("https://etcd.example:2379", **ca, WARREN_ETCD_CERT=str(tmp_path / "client.crt"),
                                  WARREN_ETCD_KEY=str(tmp_path / "client.key")))
    assert check.ok and "client certificate" in check.detail
