import pytest

from bench import reference


def test_tcp_client_json(data_dir):
    r = reference.parse((data_dir / "iperf3_tcp_client.json").read_text())
    assert r["tool"] == "iperf3"
    assert r["bytes"] == 1698627584
    assert r["gbps"] == pytest.approx(13.554984106907557)
    assert r["sent_gbps"] == pytest.approx(13.575841135579018)
    assert "loss_pct" not in r


def test_udp_client_json_reports_received_rate_and_loss(data_dir):
    r = reference.parse((data_dir / "iperf3_udp_client.json").read_text())
    assert r["bytes"] == 103854016
    assert r["gbps"] == pytest.approx(0.8307008772613926)
    assert r["messages_sent"] == 175250
    assert r["loss_pct"] == pytest.approx(59.74151212553495)


def test_iperf3_error_document_is_an_error():
    with pytest.raises(ValueError, match="unable to connect"):
        reference.parse('{"start": {}, "error": "unable to connect to server"}')
    with pytest.raises(ValueError, match="did not print JSON"):
        reference.parse("iperf3: error - the server is busy")


def test_client_argv_matches_our_case():
    tcp = reference.client_argv("tcp", "198.18.0.2", 5201, 65536, 2.0)
    assert tcp[:4] == ["iperf3", "-c", "198.18.0.2", "-p"]
    assert "-u" not in tcp and ["-l", "65536"] == tcp[5:7] and "-t" in tcp
    udp = reference.client_argv("udp", "198.18.0.2", 5201, 1472, 0.5, count=1000)
    assert udp[-3:] == ["-u", "-b", "0"] and ["-n", str(1000 * 1472)] == udp[udp.index("-n"):udp.index("-n") + 2]
