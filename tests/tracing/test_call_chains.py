"""Call-chain extraction from copytrace's dmesg stacks (captured in the 6.1 lab VM)."""

from pathlib import Path

from call_chains import parse_chains

DATA = Path(__file__).with_name("data") / "dmesg_chains_6.1.txt"


def test_chains_from_int3_and_ftrace_kprobes():
    chains = dict(parse_chains(DATA.read_text()))
    # MSG_ZEROCOPY over loopback: the "avoided" copy happens in the receive softirq that the
    # sender's own sendmsg runs (so it is attributed to the sender).
    zc = chains["skb_copy_ubufs"].split(" <- ")
    assert zc[0].startswith("__netif_receive_skb_core") and "tcp_sendmsg_locked" in zc
    assert zc[-1] == "____sys_sendmsg"
    assert chains["_copy_to_iter"] == ("__skb_datagram_iter <- skb_copy_datagram_iter <- "
                                       "tcp_recvmsg_locked <- tcp_recvmsg <- inet_recvmsg <- "
                                       "__sys_recvfrom")


def test_unreliable_frames_are_dropped():
    log = ("[1.0] copytrace: call chain of f (pid 1, len 2):\n"
           "[1.1] RIP: 0010:f+0x1/0x10\n"
           "[1.2]  ? junk+0x1/0x2\n"
           "[1.3]  caller+0x5/0x9\n"
           "[1.4]  __sys_sendto+0x1/0x2\n")
    assert parse_chains(log) == [("f", "caller <- __sys_sendto")]
