"""The kernel's own count that tcp_zerocopy_receive's mapped + copied are checked against."""

import socket

from workloads.tcp_zerocopy_receive import kernel_bytes_received


def test_kernel_bytes_received_is_the_payload_exactly():
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1)
    with lsock, socket.create_connection(lsock.getsockname()) as c:
        s, _ = lsock.accept()
        with s:
            c.sendall(b"x" * 123_457)
            c.shutdown(socket.SHUT_WR)
            got = 0
            while chunk := s.recv(65536):
                got += len(chunk)
            assert got == 123_457
            # the FIN's sequence number is not payload
            assert kernel_bytes_received(s) == 123_457
