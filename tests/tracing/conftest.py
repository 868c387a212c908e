import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))   # peers.py, udp_peer.py


@pytest.fixture
def need_root():
    if os.geteuid() != 0:
        pytest.skip("needs root (tracefs instances, sysctl net.core.rmem_max)")
