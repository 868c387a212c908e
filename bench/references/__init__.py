"""The field's standard tools as reference rows beside ours: iperf3 for TCP and UDP
(`iperf3.py`), perftest for RDMA (`perftest.py`), and the row runner that starts them where a
placement puts the case (`rows.py`). A new path's peer goes here."""
