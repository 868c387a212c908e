"""Two runs of one suite started in the same second never write the same result file."""

import subprocess
import sys
from datetime import datetime

from bench import results

NOW = datetime(2026, 12, 2, 13, 0, 0)


def test_the_name_says_suite_and_second(tmp_path):
    p = results.new_path(tmp_path, "smoke", NOW)
    assert p.parent == tmp_path and p.name.startswith("smoke-20261202-130000-")
    assert p.suffix == ".json" and not p.exists()      # nothing created before the run writes


def test_same_second_same_process_skips_a_taken_name(tmp_path):
    first = results.new_path(tmp_path, "smoke", NOW)
    first.write_text("{}")
    names = {results.new_path(tmp_path, "smoke", NOW) for _ in range(50)}
    assert first not in names


def test_same_second_two_processes_differ(tmp_path):
    code = ("import sys; from datetime import datetime; from pathlib import Path; "
            "from bench import results; "
            "print(results.new_path(Path(sys.argv[1]), 'smoke', datetime(2026, 12, 2, 13)))")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE,
                              text=True) for _ in range(2)]     # both alive at once: two pids
    names = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert names[0] != names[1]
    pids = {f"{p.pid:x}" for p in procs}
    assert {n.rsplit("-", 1)[1][:-len("xxxx.json")] for n in names} == pids
