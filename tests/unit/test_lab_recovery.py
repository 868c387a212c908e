"""When the lab counts as broken after a test (tests/lab_recovery.py), on a faked lab status."""

from bench.lab import manager, sshkeys
from tests import lab_recovery


def _status(*running):
    return {"running": all(running), "key": "/k",
            "nodes": [{"name": f"lab{i}", "running": r, "ssh_port": 2200 + i, "console": "/c"}
                      for i, r in enumerate(running)]}


def test_a_lab_that_was_taken_down_is_not_broken(monkeypatch):
    monkeypatch.setattr(manager, "status", lambda paths: _status(False))
    assert lab_recovery.broken(None) is None
    monkeypatch.setattr(manager, "status", lambda paths: {"running": False, "nodes": []})
    assert lab_recovery.broken(None) is None


def test_a_frozen_guest_is_broken(monkeypatch):
    monkeypatch.setattr(manager, "status", lambda paths: _status(True))
    monkeypatch.setattr(sshkeys, "ssh_ok", lambda *a, **kw: (False, "banner exchange timeout"))
    why = lab_recovery.broken(None)
    assert why and "lab0" in why and "banner exchange timeout" in why


def test_one_node_of_two_gone_is_broken(monkeypatch):
    monkeypatch.setattr(manager, "status", lambda paths: _status(True, False))
    monkeypatch.setattr(sshkeys, "ssh_ok", lambda *a, **kw: (True, ""))
    assert lab_recovery.broken(None) == "lab1: QEMU exited"


def test_a_lab_that_answers_is_healthy(monkeypatch):
    monkeypatch.setattr(manager, "status", lambda paths: _status(True, True))
    asked = []
    monkeypatch.setattr(sshkeys, "ssh_ok", lambda host, port, *a, **kw: (asked.append(port), (True, ""))[1])
    assert lab_recovery.broken(None) is None and asked == [2200, 2201]
