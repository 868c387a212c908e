"""`bench`: the command line. Every bad input ends in one message naming the fix, exit code 2."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bench import interrupts
from bench.errors import UsageError, report

EXIT_FAILED = 1


def _sizes(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(s, 0) for s in text.replace(",", " ").split())
    except ValueError:
        raise argparse.ArgumentTypeError(f"sizes must be integers, e.g. 1472,65536 (got {text!r})") from None


def _sockbuf(text: str) -> int:
    from bench.references import iperf3 as reference
    try:
        return reference.parse_sockbuf(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(f"{exc.message} (fix: {exc.fix})") from None


def _topology(text: str) -> str:
    """loopback, veth, or either with an MTU set inside our namespaces (KIND-mtuN)."""
    from bench.topology import parse_kind
    try:
        parse_kind(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(f"{exc.message} (fix: {exc.fix})") from None
    return text


def parse_cpus(text: str | None) -> tuple[int, ...] | None:
    """--cpus SENDERS,RECEIVERS[,SOFTIRQ] -> (s, r[, q]) of flow 0 (bench/cpulists.py has the
    lists); the placement checks them against the CPUs of the machine(s) the sides run on."""
    from bench import cpulists
    lists = cpulists.parse(text)
    return lists.first if lists else None


def cmd_run(args) -> int:
    from bench import session
    the_suite, options = run_inputs(args)
    outcome = session.run(the_suite, options)
    show(outcome)
    return 0 if outcome.result.status == "complete" else EXIT_FAILED


def run_inputs(args):
    """The suite and the typed run options of `bench run` (and `bench nightly`): bad input
    fails here, before anything connects or starts."""
    from bench import session, suite
    check_out_dir(args.out)
    from bench import cpulists
    the_suite, cpus = suite.load(args.suite), parse_cpus(args.cpus)
    return the_suite, session.RunOptions(
        out=Path(args.out), target=args.target, topology=args.topology, duration=args.duration,
        bytes=args.bytes, sizes=args.sizes, repeat=args.repeat,
        workloads=tuple(args.workload) if args.workload else None,
        reference=False if args.no_reference else None, batch=args.batch,
        queue_depth=args.queue_depth, response_size=args.response_size,
        in_flight=args.in_flight, flows=args.flows, cpu_lists=cpulists.parse(args.cpus),
        copies=args.copies, syscalls=args.syscalls, cpus=cpus,
        warmup=not args.no_warmup, rdma_device=args.rdma_device, sockbuf=args.sockbuf)


def show(outcome) -> None:
    """What `bench run` prints (the emulated-target/soft-RoCE warnings first) and the reports
    it writes beside the result JSON."""
    from reports import markdown, publish
    print(markdown.terminal(outcome.result))
    print(f"\nresult: {outcome.path}", file=sys.stderr)
    for path in publish.beside(outcome.result, outcome.path):
        print(f"report: {path}", file=sys.stderr)


def check_out_dir(out: str) -> None:
    """--out must be a directory we can create files in, checked before anything starts (and
    without creating it: a refused run leaves nothing behind)."""
    from bench.results import out_dir_error
    err = out_dir_error(Path(out))
    if err:
        raise UsageError(f"--out {out}: {err}",
                         "pass a writable directory for the result files, e.g. --out results")


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
        return _doctor_remote(args)
    if args.cleanup:
        from bench.cleanup import cleanup_all
        for line in cleanup_all():
            print(line)
    return _print_checks(doctor.as_json(doctor.run_checks()), args.json)


def _doctor_remote(args) -> int:
    """`bench doctor [--cleanup]` on every node of a target."""
    from bench.targets import open_target
    target = open_target(args.target)
    try:
        return _doctor_on(target, args)
    finally:
        target.close()


def _doctor_on(target, args) -> int:
    target.check()
    status = 0
    for i, h in enumerate(target.hosts):
        if len(target.hosts) > 1 and not args.json:
            print(f"== {h.name}")
        if args.cleanup:
            res = target.run(i, [target.remote_bench, "doctor", "--cleanup"], check=False,
                             timeout=300)
            print(res.stdout, end="")
            status = status or (0 if res.returncode == 0 else EXIT_FAILED)
        else:
            _print_checks(target.doctor(node=i), args.json)
    return status


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
    if args.html or args.md:
        from reports import publish
        for path in publish.write(loaded, list(args.results), _out_path(args.html),
                                  _out_path(args.md)):
            print(f"wrote {path}", file=sys.stderr)
        return 0
    for r in loaded:
        print(markdown.render(r))
    return 0


def _out_path(text: str | None) -> Path | None:
    return Path(text) if text else None


def _load_all(paths: list[str]):
    from bench import results
    return [results.load(Path(p)) for p in paths]


def cmd_compare(args) -> int:
    from reports import compare, publish
    loaded = _load_all(args.results)
    cmp = compare.run(loaded, list(args.results), args.threshold, args.force, args.adjust)
    text = compare.markdown(cmp)
    if args.md:
        publish.write_atomic(Path(args.md), text)
    if args.html:
        publish.write_atomic(Path(args.html), compare.html(cmp))
    print(text)
    return EXIT_FAILED if cmp.regressions else 0


def cmd_history(args) -> int:
    from bench.history import History
    if args.action == "add" and not args.results:
        raise UsageError("history add: no result files given", "bench history add RESULT.json...")
    loaded = _load_all(args.results) if args.action == "add" else []   # bad input before the db
    with History(Path(args.db) if args.db else None) as hist:
        if args.action == "add":
            for path, r in zip(args.results, loaded, strict=True):
                run_id, new = hist.add(r, str(path))
                print(f"{'stored' if new else 'already stored'}: run {run_id} ({path})")
        elif args.action == "list":
            for run in hist.runs(args.suite):
                print(f"{run.id:5} {run.started[:19]} {run.suite:16} {run.status:11} "
                      f"{run.hostname} {run.kernel} {run.cases} cases {run.source or ''}")
        elif args.action == "plot":
            from reports import publish, trends
            out = Path(args.out or "history.html")
            publish.write_atomic(out, trends.page(hist.trend(args.suite),
                                                  f"copybench history: {hist.path}",
                                                  hist.latency_trend(args.suite)))
            print(f"wrote {out}", file=sys.stderr)
    return 0


def cmd_nightly(args) -> int:
    from bench import nightly
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file", "pass a directory for the night's results")
    if args.window < 1:
        raise UsageError(f"--window {args.window}: needs at least one night", "e.g. --window 10")
    from bench.history import History
    db = Path(args.db) if args.db else None
    History(db).close()      # a bad --db fails before the run
    the_suite, options = run_inputs(args)
    return nightly.night(the_suite, options, db, args.threshold, args.window, shown=show)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="bench", description="Count and cost the CPU's data copies "
                                 "on each network path.")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run a suite and write a result JSON")
    run.add_argument("--suite", required=True, help="built-in suite name or path to a .toml")
    run.add_argument("--target", default=None,
                     help="auto (default: here if this machine has what the suite needs, else "
                     "the lab VM), local, lab, or an inventory/hosts")
    run.add_argument("--topology", type=_topology, metavar="KIND",
                     help="override the suite's topology: loopback, veth, or KIND-mtuN with the "
                          "MTU N set inside our namespaces (veth-mtu61492, loopback-mtu61492: "
                          "whole-page segments; root); two-node targets always use their link")
    run.add_argument("--out", default="results", help="directory for result files (default: results)")
    g = run.add_mutually_exclusive_group()
    g.add_argument("--duration", type=float, help="seconds per sample")
    g.add_argument("--bytes", type=int, help="payload bytes per sample (instead of a duration)")
    run.add_argument("--sizes", type=_sizes, help="message sizes, e.g. 1472,65536")
    run.add_argument("--repeat", type=int, help="samples per case")
    run.add_argument("--workload", action="append", help="only these workloads (repeatable)")
    run.add_argument("--batch", type=int, help="UDP datagrams per system call (sendmmsg/recvmmsg)")
    run.add_argument("--queue-depth", type=int, metavar="N",
                     help="io_uring requests in flight per submission (1-32768, default: the "
                          "suite's queue_depth, else 32)")
    run.add_argument("--response-size", type=int, metavar="R",
                     help="request/response cases (tcp_rr, udp_rr, io_uring_rr): response bytes "
                          "(default: the suite's response_size, else the request's size)")
    run.add_argument("--flows", type=int, metavar="N",
                     help="independent flows per case, each its own sender and receiver "
                          "processes (default: the suite's flows, else 1); with --cpus 0-3,4-7 "
                          "flow i runs on the i-th CPU of each side")
    run.add_argument("--in-flight", type=int, metavar="N",
                     help="request/response cases: transactions outstanding at once (1-1024, "
                          "default: the suite's in_flight, else 1)")
    run.add_argument("--copies", default="auto", metavar="BACKEND",
                     help="count the kernel's copies in one extra traced sample per case: auto "
                          "(default: the most exact backend per copy point), kmod, bpftrace, "
                          "kprobe_events, tracepoints, or off")
    run.add_argument("--sockbuf", type=_sockbuf, metavar="auto|BYTES",
                     help="socket buffers of ours and iperf3 alike: auto (kernel autotuning) or "
                          "a fixed size such as 4M (default: 4 MiB or the measuring machine's "
                          "net.core.{r,w}mem_max, whichever is smaller)")
    run.add_argument("--syscalls", choices=("auto", "off"), default="auto",
                     help="count each agent's system calls in the kernel on "
                          "raw_syscalls:sys_enter (a tracefs hist trigger, else bpftrace): auto "
                          "(default: in the copy-counting sample, "
                          "or in one extra sample per case when copies are not counted) or off")
    run.add_argument("--no-reference", action="store_true", help="skip the iperf3 reference rows")
    run.add_argument("--cpus", metavar="SENDER,RECEIVER[,SOFTIRQ]",
                     help="pin the sender and receiver (our agents and iperf3 alike) to these "
                          "CPUs, e.g. --cpus 0,1; a third CPU takes the receive softirq of the "
                          "veth topology (RPS on the receiving end, as on two machines; by "
                          "default it runs on the sending CPU), e.g. --cpus 0,1,1; ranges per "
                          "side place flows round robin (--flows 4 --cpus 0-3,4-7); recorded "
                          "in the result")
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

    rep = sub.add_parser("report", help="render result files as Markdown (stdout), or as "
                         "HTML with plots and diagrams and Markdown files")
    rep.add_argument("results", nargs="+")
    rep.add_argument("--html", metavar="OUT.html", help="write a self-contained HTML report")
    rep.add_argument("--md", metavar="OUT.md", help="write the Markdown report")
    rep.add_argument("--pyperf", metavar="OUT.json", help="export as pyperf JSON for compare_to")
    rep.set_defaults(func=cmd_report)

    from reports.compare import DEFAULT_THRESHOLD_PCT
    cmp = sub.add_parser("compare", help="per case deltas against the first result, with "
                         "significance; exit 1 on a regression")
    cmp.add_argument("results", nargs="+", metavar="RESULT.json")
    cmp.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD_PCT, metavar="PCT",
                     help=f"flag significant changes for the worse beyond PCT%% (default "
                          f"{DEFAULT_THRESHOLD_PCT:g})")
    cmp.add_argument("--force", action="store_true",
                     help="compare runs of different machines, suites or run parameters anyway")
    cmp.add_argument("--adjust", choices=("bh", "holm"), default="bh",
                     help="multiple-comparison adjustment across cases x metrics: "
                          "Benjamini-Hochberg (default) or Holm")
    cmp.add_argument("--md", metavar="OUT.md")
    cmp.add_argument("--html", metavar="OUT.html")
    cmp.set_defaults(func=cmd_compare)

    hist = sub.add_parser("history", help="runs stored in SQLite: add, list, plot trends")
    hist.add_argument("action", choices=("add", "list", "plot"))
    hist.add_argument("results", nargs="*", metavar="RESULT.json", help="for add")
    hist.add_argument("--db", help="SQLite file (default: $XDG_DATA_HOME/copybench/history.sqlite3)")
    hist.add_argument("--suite", help="only this suite (list, plot)")
    hist.add_argument("--out", metavar="OUT.html", help="plot: where (default history.html)")
    hist.set_defaults(func=cmd_history)

    night = sub.add_parser("nightly", conflict_handler="resolve",
                           help="run + store in the history + report + judge against earlier "
                           "comparable nights; exit 1 on a regression")
    night._add_container_actions(run)       # every `bench run` option, the same way
    night.add_argument("--db", help="SQLite history (default: $XDG_DATA_HOME/copybench/"
                       "history.sqlite3)")
    night.add_argument("--out", default="nightly", help="directory for the night's results and "
                       "reports (default: nightly)")
    night.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD_PCT, metavar="PCT")
    night.add_argument("--window", type=int, default=10, metavar="N",
                       help="judge against up to N earlier comparable nights (default 10; "
                            "throughput and CPU need 3)")
    night.set_defaults(func=cmd_nightly)

    for optional in ("bench.lab.cli", "bench.trace_cmd"):
        try:
            __import__(optional, fromlist=["add_parser"]).add_parser(sub)
        except ImportError:
            pass  # that part of the harness is not in this build
    return ap


def main(argv: list[str] | None = None) -> int:
    """The user's commands; node commands (`bench agent`, ...) go through bench/entry.py."""
    argv = sys.argv[1:] if argv is None else argv
    interrupts.install()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except UsageError as exc:
        return report(exc)
    except KeyboardInterrupt as exc:
        print(f"bench: interrupted ({interrupts.reason(exc)}); finished cases are kept in the "
              "result file", file=sys.stderr)
        return interrupts.exit_code(exc)


if __name__ == "__main__":
    sys.exit(main())
