"""TLS to etcd with client certificates (certificates made with openssl in the test)."""
from __future__ import annotations

import shutil
import subprocess

import pytest

from datastore import Datastore, DatastoreError, DatastoreUnavailable, EtcdConfig
from datastore.localetcd import LocalEtcd
from tests.support.etcd import tmpfs_dir

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")


def openssl(*args: str, cwd) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_ca(d, name: str) -> None:
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name}",
            "-keyout", f"{name}.key", "-out", f"{name}.crt", cwd=d)


def make_cert(d, ca: str, name: str, san: str) -> None:
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", f"{name}.key",
            "-out", f"{name}.csr", cwd=d)
    (d / f"{name}.ext").write_text(f"subjectAltName={san}\nextendedKeyUsage=serverAuth,clientAuth\n")
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key", "-CAcreateserial",
            "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.crt", cwd=d)


@pytest.fixture(scope="module")
def tls_etcd(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    make_ca(d, "ca")
    make_ca(d, "other-ca")
    make_cert(d, "ca", "server", "IP:127.0.0.1")
    make_cert(d, "ca", "client", "DNS:client")

    class TlsEtcd(LocalEtcd):
        @property
        def endpoint(self) -> str:
            return f"https://{self.host}:{self.client_port}"

        def wait_ready(self, timeout: float = 20.0) -> None:
            config = EtcdConfig.from_env(env={"WARREN_ETCD_CA": str(d / "ca.crt"),
                                              "WARREN_ETCD_CERT": str(d / "client.crt"),
                                              "WARREN_ETCD_KEY": str(d / "client.key")},
                                         endpoints=self.endpoint)
            import time
            deadline = time.monotonic() + timeout
            while True:
                try:
                    Datastore(config).revision()
                    return
                except DatastoreError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)

    server = TlsEtcd(tmpfs_dir("warren-etcd-tls-"), die_with_parent=True, extra_args=[
        "--cert-file", str(d / "server.crt"), "--key-file", str(d / "server.key"),
        "--client-cert-auth", "--trusted-ca-file", str(d / "ca.crt")]).start()
    try:
        yield server, d
    finally:
        server.stop()
        shutil.rmtree(server.data_dir, ignore_errors=True)


def config(d, endpoint, ca="ca.crt", cert="client.crt", key="client.key") -> EtcdConfig:
    env = {"WARREN_ETCD_CA": str(d / ca)}
    if cert:
        env.update(WARREN_ETCD_CERT=str(d / cert), WARREN_ETCD_KEY=str(d / key))
    return EtcdConfig.from_env(env=env, endpoints=endpoint)


def test_client_certificate_connects(tls_etcd):
    server, d = tls_etcd
    store = Datastore(config(d, server.endpoint))
    store.put("/warren/v1/tls-test", "ok")
    assert store.get("/warren/v1/tls-test").value == b"ok"


def test_wrong_ca_fails_clearly(tls_etcd):
    server, d = tls_etcd
    store = Datastore(EtcdConfig(endpoints=config(d, server.endpoint).endpoints, ca=str(d / "other-ca.crt"),
                                 cert=str(d / "client.crt"), key=str(d / "client.key"), timeout=2))
    with pytest.raises(DatastoreUnavailable) as err:
        store.get("/x")
    assert server.endpoint.replace("https://", "") in str(err.value)
    assert "CERTIFICATE_VERIFY_FAILED" in str(err.value) and "WARREN_ETCD_CA" in str(err.value)
    assert "\n" not in str(err.value)


def test_without_client_certificate_is_refused(tls_etcd):
    server, d = tls_etcd
    store = Datastore(EtcdConfig(endpoints=config(d, server.endpoint).endpoints, ca=str(d / "ca.crt"), timeout=2))
    with pytest.raises(DatastoreError) as err:
        store.get("/x")
    assert "WARREN_ETCD_CERT" in str(err.value) and "\n" not in str(err.value)


def test_plain_text_is_refused_when_tls_is_configured(tls_etcd):
    server, d = tls_etcd
    with pytest.raises(DatastoreError, match="plain"):
        config(d, server.endpoint.replace("https://", "http://"))


def test_https_to_a_plain_member_fails_clearly(tls_etcd, etcd_server):
    _, d = tls_etcd
    plain = etcd_server.endpoint.replace("http://", "https://")
    store = Datastore(EtcdConfig.from_env(env={"WARREN_ETCD_CA": str(d / "ca.crt"), "WARREN_ETCD_TIMEOUT": "2"},
                                          endpoints=plain))
    with pytest.raises(DatastoreUnavailable) as err:
        store.get("/x")
    message = str(err.value)
    assert plain in message and "TLS handshake failed" in message and "plain http://" in message
    assert "\n" not in message


def test_http_to_a_tls_member_fails_clearly(tls_etcd):
    server, _ = tls_etcd
    store = Datastore(EtcdConfig.from_env(env={"WARREN_ETCD_TIMEOUT": "2"},
                                          endpoints=server.endpoint.replace("https://", "http://")))
    with pytest.raises(DatastoreUnavailable) as err:
        store.get("/x")
    assert "https:// only" in str(err.value) and "\n" not in str(err.value)
