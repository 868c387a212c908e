import json

import pytest

from bench import results
from bench.errors import UsageError
from bench.results import CaseResult, RunResult


def sample_result():
    r = RunResult(suite="smoke", metadata={"kernel": "6.1.0", "cpu_count": 2})
    c = CaseResult(id="udp-1472-veth", workload="udp", size=1472, topology="veth",
                   samples=[{"gbps": 2.0, "cpu_s_per_gb": {"sender": 3.0}},
                            {"gbps": 4.0, "cpu_s_per_gb": {"sender": 5.0}}],
                   reference=[{"tool": "iperf3", "gbps": 3.0}])
    r.cases.append(c)
    r.status = "complete"
    return r


def test_round_trip_keeps_everything(tmp_path):
    r = sample_result()
    path = results.save(r, tmp_path / "r.json")
    back = results.load(path)
    assert back.to_json() == r.to_json()
    assert json.loads(path.read_text())["schema_version"] == results.SCHEMA_VERSION


def test_stats_over_samples_and_dotted_keys():
    c = sample_result().cases[0]
    assert c.stat("gbps") == {"n": 2, "mean": 3.0, "median": 3.0, "stdev": pytest.approx(1.4142135),
                              "min": 2.0, "max": 4.0, "spread_pct": 66.667, "ci95": None}
    assert c.stat("cpu_s_per_gb.sender")["median"] == 4.0
    assert c.stat("missing") is None


def test_newer_schema_is_refused_with_upgrade_hint(tmp_path):
    doc = sample_result().to_json()
    doc["schema_version"] = results.SCHEMA_VERSION + 1
    p = tmp_path / "new.json"
    p.write_text(json.dumps(doc))
    with pytest.raises(UsageError) as e:
        results.load(p)
    assert "newer" in e.value.message and "upgrade" in e.value.fix


@pytest.mark.parametrize("content,needle", [("{}", "not a copybench result"),
                                            ("{not json", "not valid JSON"),
                                            ('{"schema_version": 0}', "unknown schema_version")])
def test_bad_files_are_refused(tmp_path, content, needle):
    p = tmp_path / "x.json"
    p.write_text(content)
    with pytest.raises(UsageError) as e:
        results.load(p)
    assert needle in e.value.message


def test_save_is_atomic_and_leaves_no_temp_files(tmp_path):
    results.save(sample_result(), tmp_path / "r.json")
    results.save(sample_result(), tmp_path / "r.json")
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_warmup_samples_stay_in_the_file_but_out_of_the_statistics():
    c = sample_result().cases[0]
    c.samples.insert(0, {"gbps": 100.0, "warmup": True})
    assert c.stat("gbps")["n"] == 2 and c.stat("gbps")["max"] == 4.0
    assert len(c.samples) == 3


def test_median_interval_from_order_statistics():
    assert results.median_interval([1, 2, 3, 4, 5]) is None          # n=5: min-max is only 93.75%
    low, high, coverage = results.median_interval([5, 1, 4, 2, 6, 3])
    assert (low, high) == (1, 6) and coverage == pytest.approx(1 - 2 / 64)
    low, high, coverage = results.median_interval(list(range(1, 21)))
    assert (low, high) == (6, 15) and coverage >= 0.95             # n=20: x(6)..x(15), 95.9%
