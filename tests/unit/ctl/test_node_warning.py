"""node start's one-line warning when etcd is plain HTTP off this host (issue 12 item 1)."""
from __future__ import annotations

from ctl.node import plaintext_remote, warn_plaintext_etcd
from datastore import EtcdConfig


def config(endpoints: str, **tls) -> EtcdConfig:
    return EtcdConfig.from_env(env={"WARREN_ETCD_" + k.upper(): v for k, v in tls.items()}, endpoints=endpoints)


def test_loopback_plain_http_is_fine():
    assert plaintext_remote(config("http://127.0.0.1:2379,http://[::1]:2379,http://localhost:2379")) == []


def test_remote_plain_http_is_named():
    found = plaintext_remote(config("http://127.0.0.1:2379,http://198.19.1.1:2379,http://etcd.example:2379"))
    assert found == ["http://198.19.1.1:2379", "http://etcd.example:2379"]


def test_tls_is_fine(tmp_path):
    files = {k: str(tmp_path / k) for k in ("ca", "cert", "key")}
    for path in files.values():
        open(path, "w").close()
    assert plaintext_remote(config("https://198.19.1.1:2379", **files)) == []


def test_the_warning_is_one_line_on_stderr(capsys):
    assert warn_plaintext_etcd(config("http://10.0.0.5:2379")) == ["http://10.0.0.5:2379"]
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1
    assert "http://10.0.0.5:2379" in err and "https://" in err and "warning" in err
    warn_plaintext_etcd(config("http://127.0.0.1:2379"))
    assert capsys.readouterr() == ("", "")
