"""`bench`: the command line. Every bad input ends in one message naming the fix, exit code 2."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from datetime import datetime
from pathlib import Path

from bench.errors import UsageError

EXIT_USAGE, EXIT_FAILED, EXIT_INTERRUPTED = 2, 1, 130


def _sizes(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(s, 0) for s in text.replace(",", " ").split())
    except ValueError:
        raise argparse.ArgumentTypeError(f"sizes must be integers, e.g. 1472,65536 (got {text!r})") from None


def parse_cpus(text: str | None) -> tuple[int, int] | None:
    """--cpus SENDER,RECEIVER -> (s, r), checked against the CPUs this process may use."""
    if not text:
        return None
    try:
        cpus = tuple(int(x) for x in text.split(","))
    except ValueError:
        cpus = ()
    if len(cpus) != 2:
        raise UsageError(f"--cpus {text!r}: expected two CPU numbers", "e.g. --cpus 0,1")
    allowed = os.sched_getaffinity(0)
    bad = [c for c in cpus if c not in allowed]
    if bad:
        raise UsageError(f"--cpus {text}: CPU {bad[0]} is not available here "
                         f"(allowed: {sorted(allowed)})", "pick CPUs from that list")
    return cpus


def cmd_run(args, placement=None) -> int:
    from bench import plan, suite
    from bench.progress import make_reporter
    from bench.runner import Runner
    from reports import markdown

    if args.target not in (None, "local") and placement is None:
        return _run_remote(args)
    ov = plan.Overrides(duration=args.duration, bytes=args.bytes, sizes=args.sizes,
                        repeat=args.repeat, topology=args.topology,
                        workloads=tuple(args.workload) if args.workload else None,
                        reference=False if args.no_reference else None, batch=args.batch)
    the_plan = plan.expand(suite.load(args.suite), ov)
    if placement is None:     # this machine: what its kernel lacks is a skip, not an agent error
        from bench import doctor
        the_plan = plan.require(the_plan, doctor.capabilities(plan.needed_capabilities(the_plan)))
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    out = Path(args.out) / f"{the_plan.suite}-{stamp}.json"
    total = sum(c.repeat for c in the_plan.cases if not c.skip_reason)
    runner = Runner(the_plan, out, placement=placement, copies_spec=args.copies,
                    cpus=parse_cpus(args.cpus), warmup=not args.no_warmup,
                    rdma_device=getattr(args, "rdma_device", None))
    if placement is not None:
        runner.result.metadata["placement"] = {"kind": placement.name,
                                               "hosts": [h.name for h in placement.target.hosts]}
    runner.check()
    reporter = make_reporter(total)
    runner.reporter = reporter
    try:
        result = runner.run()
    finally:
        if hasattr(reporter, "close"):
            reporter.close()
    print(markdown.table(result))
    copies = markdown.copies_table(result)
    if copies:
        print("\n" + copies)
    print(f"\nresult: {out}", file=sys.stderr)
    return 0 if result.status == "complete" else EXIT_FAILED


def _forward_run_argv(args, target) -> list[str]:
    """The same `bench run` for a remote node (suite files are uploaded first)."""
    suite_arg = args.suite
    if Path(args.suite).is_file():
        suite_arg = f"/tmp/copybench-suite-{Path(args.suite).name}"
        with open(args.suite, "rb") as f:
            p = target.exec(0, ["tee", suite_arg], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            text=False)
            p.communicate(f.read(), timeout=60)
    argv = ["run", "--suite", suite_arg]
    for flag, value in (("--topology", args.topology), ("--duration", args.duration),
                        ("--bytes", args.bytes), ("--repeat", args.repeat), ("--batch", args.batch)):
        if value is not None:
            argv += [flag, str(value)]
    if args.sizes:
        argv += ["--sizes", ",".join(map(str, args.sizes))]
    for w in args.workload or []:
        argv += ["--workload", w]
    if args.no_reference:
        argv.append("--no-reference")
    if args.no_warmup:
        argv.append("--no-warmup")
    if args.cpus:
        argv += ["--cpus", args.cpus]
    if getattr(args, "rdma_device", None):
        argv += ["--rdma-device", args.rdma_device]
    argv += ["--copies", args.copies]
    return argv


def _run_remote(args) -> int:
    from bench import results
    from bench.targets.ssh import open_target
    from reports import markdown
    target = open_target(args.target)
    target.check()
    if args.command == "doctor":
        return _print_checks(target.doctor(), args.json)
    if len(target.hosts) >= 2:
        return _run_two_nodes(args, target)
    paths = target.run_bench(_forward_run_argv(args, target), Path(args.out))
    status = 0
    for path in paths:
        r = results.load(path)
        print(markdown.table(r))
        print(f"\nresult: {path}", file=sys.stderr)
        status = status or (0 if r.status == "complete" else EXIT_FAILED)
    return status


def _run_two_nodes(args, target) -> int:
    """Sender on node 0, receiver on node 1, across the link between them."""
    from bench.placement import LinkPlacement
    args.topology = "link"
    return cmd_run(args, placement=LinkPlacement(target))


def cmd_list(args) -> int:
    from bench import suite
    from workloads.registry import WORKLOADS
    print("suites:")
    for name in suite.builtin_names():
        s = suite.load(name)
        print(f"  {name:16} {s.description}")
    print("\nworkloads:")
    for w in WORKLOADS.values():
        state = "ready" if w.built else "not built yet"
        needs = f" needs: {', '.join(w.needs)}" if w.needs else ""
        print(f"  {w.name:22} {state:14} {w.description}.{needs}")
        print(f"  {'':22} {'':14} expect: {w.expected_copies}")
    return 0


def cmd_doctor(args) -> int:
    from bench import doctor
    if args.target not in (None, "local"):
        return _run_remote(args)
    if args.cleanup:
        from bench.cleanup import cleanup_all
        for line in cleanup_all():
            print(line)
    return _print_checks(doctor.as_json(doctor.run_checks()), args.json)


def _print_checks(checks: list[dict], as_json: bool) -> int:
    if as_json:
        print(json.dumps(checks, indent=1))
        return 0
    width = max(len(c["name"]) for c in checks)
    for c in checks:
        mark = "ok " if c["ok"] else "NO "
        print(f"{mark} {c['name']:{width}}  {c['detail']}")
        if not c["ok"] and c.get("fix"):
            print(f"    {'':{width}}  fix: {c['fix']}")
    return 0


def cmd_report(args) -> int:
    from bench import results
    from reports import markdown
    loaded = [results.load(Path(path)) for path in args.results]
    if args.pyperf:
        from reports import pyperf_export
        if len(loaded) != 1:
            raise UsageError("--pyperf exports one result at a time", "pass a single RESULT.json")
        if pyperf_export.export(loaded[0], Path(args.pyperf)) is None:
            raise UsageError("nothing to export: the result has no measured samples",
                             "export a result with at least one ok case")
        print(f"wrote {args.pyperf} (compare with: python -m pyperf compare_to OLD.json NEW.json)")
        return 0
    for r in loaded:
        print(markdown.render(r))
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="bench", description="Count and cost the CPU's data copies "
                                 "on each network path.")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run a suite and write a result JSON")
    run.add_argument("--suite", required=True, help="built-in suite name or path to a .toml")
    run.add_argument("--target", default=None, help="local (default), lab, or an inventory/hosts")
    run.add_argument("--topology", choices=("loopback", "veth"),
                     help="override the suite's topology (two-node targets always use their link)")
    run.add_argument("--out", default="results", help="directory for result files (default: results)")
    g = run.add_mutually_exclusive_group()
    g.add_argument("--duration", type=float, help="seconds per sample")
    g.add_argument("--bytes", type=int, help="payload bytes per sample (instead of a duration)")
    run.add_argument("--sizes", type=_sizes, help="message sizes, e.g. 1472,65536")
    run.add_argument("--repeat", type=int, help="samples per case")
    run.add_argument("--workload", action="append", help="only these workloads (repeatable)")
    run.add_argument("--batch", type=int, help="UDP datagrams per system call (sendmmsg/recvmmsg)")
    run.add_argument("--copies", default="auto", metavar="BACKEND",
                     help="count the kernel's copies in one extra traced sample per case: auto "
                          "(default: the most exact backend per copy point), kmod, bpftrace, "
                          "kprobe_events, tracepoints, or off")
    run.add_argument("--no-reference", action="store_true", help="skip the iperf3 reference rows")
    run.add_argument("--cpus", metavar="SENDER,RECEIVER",
                     help="pin the sender and receiver (our agents and iperf3 alike) to these "
                          "CPUs, e.g. --cpus 0,1; recorded in the result")
    run.add_argument("--no-warmup", action="store_true",
                     help="skip the discarded warm-up sample of each case")
    run.add_argument("--rdma-device", metavar="NAME[:PORT]",
                     help="RDMA device for the rdma workloads and perftest (default: the first "
                          "ACTIVE port, a real NIC before soft-RoCE; with none, a soft-RoCE link "
                          "this run creates on its veth topology)")
    run.set_defaults(func=cmd_run)

    lst = sub.add_parser("list", help="suites and workloads, and what each needs")
    lst.set_defaults(func=cmd_list)

    doc = sub.add_parser("doctor", help="what this machine can measure, and how to get the rest")
    doc.add_argument("--json", action="store_true")
    doc.add_argument("--cleanup", action="store_true",
                     help="remove leftovers of killed runs (netns, tracer state)")
    doc.add_argument("--target", default=None)
    doc.set_defaults(func=cmd_doctor)

    rep = sub.add_parser("report", help="render result files as Markdown")
    rep.add_argument("results", nargs="+")
    rep.add_argument("--pyperf", metavar="OUT.json", help="export as pyperf JSON for compare_to")
    rep.set_defaults(func=cmd_report)

    for optional in ("bench.lab.cli", "bench.trace_cmd"):
        try:
            __import__(optional, fromlist=["add_parser"]).add_parser(sub)
        except ImportError:
            pass  # that part of the harness is not in this build
    return ap


def _on_sigterm(main_pid: int):
    def handler(signum, frame):
        if os.getpid() != main_pid:
            os._exit(128 + signum)  # a forked child (a library's helper) must not run our cleanup
        raise KeyboardInterrupt  # same clean path as Ctrl-C
    return handler


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["agent"]:
        # Undocumented: what a runner starts on a remote node (JSON lines on stdin/stdout).
        from workloads.agent import main as agent_main
        return agent_main()
    if argv[:1] == ["tracer"]:
        # Undocumented: a node's copy tracer on two-node runs (bench/tracing/remote.py).
        from bench.tracing.remote import main as tracer_main
        return tracer_main()
    signal.signal(signal.SIGTERM, _on_sigterm(os.getpid()))
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except UsageError as exc:
        print(f"bench: error: {exc.message}", file=sys.stderr)
        if exc.fix:
            print(f"bench: fix: {exc.fix}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("bench: interrupted; finished cases are kept in the result file", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
