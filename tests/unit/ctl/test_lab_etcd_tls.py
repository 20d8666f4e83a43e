"""warren-lab's etcd TLS choice: --etcd-tls/--no-etcd-tls, else $WARREN_LAB_ETCD_TLS, else off."""
from __future__ import annotations

import pytest

from ctl.lab import hostengine


def test_the_option_wins_then_the_variable_then_off(monkeypatch):
    monkeypatch.delenv(hostengine.ETCD_TLS_ENV, raising=False)
    assert hostengine.choose_etcd_tls() is False
    assert hostengine.choose_etcd_tls(True) is True and hostengine.choose_etcd_tls("ON") is True
    monkeypatch.setenv(hostengine.ETCD_TLS_ENV, "on")
    assert hostengine.choose_etcd_tls() is True and hostengine.choose_etcd_tls(False) is False


def test_a_bad_value_is_one_line(monkeypatch):
    monkeypatch.setenv(hostengine.ETCD_TLS_ENV, "yes")
    with pytest.raises(hostengine.ChoiceError, match=r"--etcd-tls must be on or off, not 'yes' \(from \$WARREN_LAB_ETCD_TLS\)"):
        hostengine.choose_etcd_tls()
