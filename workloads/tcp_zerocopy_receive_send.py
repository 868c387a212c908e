"""TCP_ZEROCOPY_RECEIVE behind a plain send(): the receive mechanism without MSG_ZEROCOPY.

The receiver is `tcp_zerocopy_receive`'s; the sender is the tcp workload's sendall(). A plain
send copies into the socket's page fragments, and where those are compound pages (the kernel
allocates them at order 3 unless net.core.high_order_alloc_disable) the receiver cannot map
them: the kernel maps only whole, non-compound pages. The row measures what that costs.
"""

from __future__ import annotations

from workloads import tcp, tcp_zerocopy_receive

sender = tcp.sender
receiver = tcp_zerocopy_receive.receiver
