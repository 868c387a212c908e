"""The HTML report opened in headless Chromium (Debian's `chromium`, installed by
`python3 -m bench.bootstrap --tests`): the screenshot is not blank and the rendered page holds
the comparison table. Requires chromium: a missing browser fails this test, it does not skip."""

import shutil
import subprocess

from bench import results
from reports import publish

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _chromium() -> str:
    exe = shutil.which("chromium")
    assert exe, "Debian's chromium is missing: run `python3 -m bench.bootstrap --tests`"
    return exe


def test_html_report_renders_in_chromium(tmp_path, data_dir):
    exe = _chromium()
    src = data_dir / "socket-vs-rdma-local.json"
    page = tmp_path / "r.html"
    publish.write([results.load(src)], [str(src)], page, None)
    base = [exe, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    shot = tmp_path / "shot.png"
    subprocess.run([*base, "--window-size=1200,900", f"--screenshot={shot}", page.as_uri()],
                   capture_output=True, timeout=120, check=True)
    dom = subprocess.run([*base, "--dump-dom", page.as_uri()], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    assert "Comparison per path" in dom and "msg_zerocopy-65536-veth" in dom

    from matplotlib.image import imread
    img = imread(shot)
    assert img.shape[0] >= 800 and img.shape[1] >= 1100
    # not blank: many distinct colours, and a good share of non-white pixels (text, table)
    flat = img[..., :3].reshape(-1, 3)
    non_white = (flat.sum(axis=1) < 2.9).mean()
    assert non_white > 0.02, f"screenshot nearly blank ({non_white:.3%} non-white)"
    assert len({tuple(p) for p in (flat[::97] * 255).astype(int)}) > 20
