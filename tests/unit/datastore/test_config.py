"""EtcdConfig.from_env: endpoints, TLS files and timeout, and their errors."""
from __future__ import annotations

import pytest

from datastore.config import DEFAULT_TIMEOUT, EtcdConfig, Endpoint
from datastore.errors import ConfigError, DatastoreError


@pytest.fixture
def pem(tmp_path):
    """Dummy TLS files (only their existence is checked)."""
    files = {}
    for name in ("ca", "cert", "key"):
        path = tmp_path / f"{name}.pem"
        path.write_text(f"-----BEGIN DUMMY {name.upper()}-----\n")
        files[name] = str(path)
    return files


def test_default_endpoint():
    cfg = EtcdConfig.from_env(env={})
    assert cfg.endpoints == (Endpoint("http", "127.0.0.1", 2379),)
    assert cfg.urls == ["http://127.0.0.1:2379"]
    assert cfg.tls is False
    assert cfg.timeout == DEFAULT_TIMEOUT
    assert (cfg.ca, cfg.cert, cfg.key) == (None, None, None)


def test_endpoints_from_environment():
    cfg = EtcdConfig.from_env(env={"WARREN_ETCD_ENDPOINTS": "http://10.0.0.1:4001"})
    assert cfg.urls == ["http://10.0.0.1:4001"]


def test_explicit_endpoints_win_over_environment():
    cfg = EtcdConfig.from_env(env={"WARREN_ETCD_ENDPOINTS": "http://10.0.0.1:4001"},
                              endpoints="http://10.0.0.2:2379")
    assert cfg.urls == ["http://10.0.0.2:2379"]


def test_comma_separated_list_keeps_order_and_ignores_blanks():
    cfg = EtcdConfig.from_env(
        env={}, endpoints=" http://10.0.0.1:2379 , http://10.0.0.2:2380,,http://etcd-3:2381 ,")
    assert cfg.urls == ["http://10.0.0.1:2379", "http://10.0.0.2:2380", "http://etcd-3:2381"]
    assert [e.target for e in cfg.endpoints] == ["10.0.0.1:2379", "10.0.0.2:2380", "etcd-3:2381"]


def test_bare_host_port_gets_http():
    cfg = EtcdConfig.from_env(env={}, endpoints="etcd.example.com:4001")
    assert cfg.endpoints == (Endpoint("http", "etcd.example.com", 4001),)
    assert cfg.urls == ["http://etcd.example.com:4001"]


def test_missing_port_defaults_to_2379():
    cfg = EtcdConfig.from_env(env={}, endpoints="http://10.0.0.9")
    assert cfg.endpoints[0].port == 2379


@pytest.mark.parametrize("text", ["[::1]:2379", "http://[::1]:2379"])
def test_ipv6_endpoint(text):
    cfg = EtcdConfig.from_env(env={}, endpoints=text)
    (ep,) = cfg.endpoints
    assert (ep.scheme, ep.host, ep.port) == ("http", "::1", 2379)
    assert ep.url == "http://[::1]:2379"
    assert ep.target == "[::1]:2379"


def test_only_commas_means_no_endpoint():
    with pytest.raises(ConfigError, match="no etcd endpoint"):
        EtcdConfig.from_env(env={}, endpoints=" , ,")


@pytest.mark.parametrize("text", ["ftp://10.0.0.1:2379", "unix://etcd.sock", "grpc://h:2379"])
def test_bad_scheme(text):
    with pytest.raises(ConfigError) as exc:
        EtcdConfig.from_env(env={}, endpoints=text)
    msg = str(exc.value)
    assert text in msg and "http(s)://HOST:PORT" in msg


@pytest.mark.parametrize("text", ["http://10.0.0.1:2379/v3", "http://10.0.0.1:2379/a/b"])
def test_path_not_allowed(text):
    with pytest.raises(ConfigError) as exc:
        EtcdConfig.from_env(env={}, endpoints=text)
    assert "no path allowed" in str(exc.value)
    assert text in str(exc.value)


@pytest.mark.parametrize("text", [
    "http://",             # no host
    "http://10.0.0.1:abc",  # port not a number
    "http://10.0.0.1:99999",  # port out of range
    "http://[::1",          # unclosed bracket
    "::1",                  # bare IPv6 without brackets
])
def test_garbage_endpoint(text):
    with pytest.raises(ConfigError) as exc:
        EtcdConfig.from_env(env={}, endpoints=text)
    msg = str(exc.value)
    assert msg.startswith("invalid etcd endpoint ")
    assert "\n" not in msg


@pytest.mark.parametrize("text", ["not a url!!", "http://foo bar:2379"])
def test_garbage_hostname_rejected(text):
    with pytest.raises(ConfigError, match="invalid etcd endpoint"):
        EtcdConfig.from_env(env={}, endpoints=text)


def test_port_zero_rejected():
    with pytest.raises(ConfigError):
        EtcdConfig.from_env(env={}, endpoints="http://10.0.0.1:0")


def test_bad_endpoint_in_a_list_is_named():
    with pytest.raises(ConfigError) as exc:
        EtcdConfig.from_env(env={}, endpoints="http://10.0.0.1:2379,ftp://10.0.0.2:2379")
    assert "ftp://10.0.0.2:2379" in str(exc.value)


def test_config_error_is_a_datastore_error():
    # The CLI catches DatastoreError: a config error must be one.
    assert issubclass(ConfigError, DatastoreError)


# -- TLS ---------------------------------------------------------------------

def test_https_with_ca_and_client_cert(pem):
    cfg = EtcdConfig.from_env(env={"WARREN_ETCD_CA": pem["ca"], "WARREN_ETCD_CERT": pem["cert"],
                                   "WARREN_ETCD_KEY": pem["key"]},
                              endpoints="https://10.0.0.1:2379,https://[fd00::1]:2379")
    assert cfg.tls is True
    assert cfg.urls == ["https://10.0.0.1:2379", "https://[fd00::1]:2379"]
    assert (cfg.ca, cfg.cert, cfg.key) == (pem["ca"], pem["cert"], pem["key"])


def test_https_with_ca_only(pem):
    cfg = EtcdConfig.from_env(env={"WARREN_ETCD_CA": pem["ca"]}, endpoints="https://h:2379")
    assert cfg.tls and cfg.cert is None and cfg.key is None


def test_https_without_ca():
    with pytest.raises(ConfigError) as exc:
        EtcdConfig.from_env(env={}, endpoints="https://10.0.0.1:2379")
    assert "WARREN_ETCD_CA" in str(exc.value)


@pytest.mark.parametrize("endpoints", [
    "http://10.0.0.1:2379",
    "10.0.0.1:2379",  # bare: becomes http
    "https://10.0.0.1:2379,http://10.0.0.2:2379",  # one plain member is enough to refuse
])
def test_ca_with_plain_http_endpoint_is_refused(pem, endpoints):
    with pytest.raises(ConfigError) as exc:
        EtcdConfig.from_env(env={"WARREN_ETCD_CA": pem["ca"]}, endpoints=endpoints)
    msg = str(exc.value)
    assert "http://" in msg and "https://" in msg


def test_cert_without_key(pem):
    with pytest.raises(ConfigError) as exc:
        EtcdConfig.from_env(env={"WARREN_ETCD_CA": pem["ca"], "WARREN_ETCD_CERT": pem["cert"]},
                            endpoints="https://h:2379")
    assert "WARREN_ETCD_CERT" in str(exc.value) and "WARREN_ETCD_KEY" in str(exc.value)


def test_key_without_cert(pem):
    with pytest.raises(ConfigError, match="together"):
        EtcdConfig.from_env(env={"WARREN_ETCD_CA": pem["ca"], "WARREN_ETCD_KEY": pem["key"]},
                            endpoints="https://h:2379")


def test_client_cert_without_ca(pem):
    with pytest.raises(ConfigError, match="WARREN_ETCD_CA"):
        EtcdConfig.from_env(env={"WARREN_ETCD_CERT": pem["cert"], "WARREN_ETCD_KEY": pem["key"]},
                            endpoints="https://h:2379")


def test_nonexistent_ca_file(tmp_path):
    missing = str(tmp_path / "nope" / "ca.pem")
    with pytest.raises(ConfigError) as exc:
        EtcdConfig.from_env(env={"WARREN_ETCD_CA": missing}, endpoints="https://h:2379")
    assert missing in str(exc.value) and "does not exist" in str(exc.value)


def test_ca_that_is_a_directory(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        EtcdConfig.from_env(env={"WARREN_ETCD_CA": str(tmp_path)}, endpoints="https://h:2379")


def test_nonexistent_client_key(pem, tmp_path):
    missing = str(tmp_path / "missing-key.pem")
    with pytest.raises(ConfigError) as exc:
        EtcdConfig.from_env(env={"WARREN_ETCD_CA": pem["ca"], "WARREN_ETCD_CERT": pem["cert"],
                                 "WARREN_ETCD_KEY": missing},
                            endpoints="https://h:2379")
    assert missing in str(exc.value)


def test_empty_tls_variables_mean_unset():
    cfg = EtcdConfig.from_env(env={"WARREN_ETCD_CA": "", "WARREN_ETCD_CERT": "",
                                   "WARREN_ETCD_KEY": ""})
    assert cfg.tls is False


# -- timeout -----------------------------------------------------------------

def test_timeout_from_environment():
    assert EtcdConfig.from_env(env={"WARREN_ETCD_TIMEOUT": "0.5"}).timeout == 0.5
    assert EtcdConfig.from_env(env={"WARREN_ETCD_TIMEOUT": "12"}).timeout == 12.0


@pytest.mark.parametrize("value", ["abc", "", "5s", "1,5"])
def test_timeout_not_a_number(value):
    with pytest.raises(ConfigError) as exc:
        EtcdConfig.from_env(env={"WARREN_ETCD_TIMEOUT": value})
    assert "WARREN_ETCD_TIMEOUT" in str(exc.value)


@pytest.mark.parametrize("value", ["0", "-1", "-0.1"])
def test_timeout_not_positive(value):
    with pytest.raises(ConfigError, match="positive"):
        EtcdConfig.from_env(env={"WARREN_ETCD_TIMEOUT": value})


def test_timeout_nan_rejected():
    with pytest.raises(ConfigError):
        EtcdConfig.from_env(env={"WARREN_ETCD_TIMEOUT": "nan"})
