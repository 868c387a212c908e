// SPDX-License-Identifier: GPL-2.0
/*
 * copytrace: the seed's send_trace/recv_trace kprobe modules generalised into one.
 *
 * Counts calls, bytes and time of kernel copy functions for chosen processes. Built by
 * bench/tracing/kmod.py against the running kernel's headers; loaded with:
 *
 *   insmod copytrace.ko symbols=_copy_from_iter:0:1:0,_copy_to_iter:0:1:0 pids=123,124
 *   insmod copytrace.ko symbols=... comm=sender,receiver
 *
 * symbols: name:ADDR:LEN:ANY   ADDR/LEN = argument positions of the kernel buffer and the
 *          length (-1 none; LEN -2 = skb->data_len of argument ADDR); ANY=1 counts every task
 *          (copies done in softirq/tasklet context, e.g. rxe) into the last slot.
 * pids:    slot i = process pids[i] or any of its descendants (walks real_parent).
 * comm:    slot i = tasks whose comm is comm[i] (the seed's filter); used instead of pids.
 * stacks:  log the kernel stack of the first N counted calls per probe to dmesg.
 * calib:   calls of the probe-cost calibration per probe mechanism (default 10000, 0 = none).
 * sockonly: 1 (default) counts a task's copies only inside a socket operation: inside one of
 *          the `gates` functions, or in a socket-only syscall (send*, recv*, *mmsg,
 *          getsockopt); 0 counts every copy.
 * gates:   kernel socket entry points (sock_sendmsg, sock_recvmsg, sock_write_iter, ...): a
 *          kretprobe on each marks the task as inside a socket operation until it returns, so
 *          write()/read() on a socket, splice and io_uring (io-wq workers too) are counted.
 *
 * Why kretprobes: the copy's duration needs its return; a kprobe post_handler runs after the
 * first instruction only. The entry handler filters (returning 1 skips the return probe), so
 * other tasks pay one comparison.
 *
 * Probe cost: the time a return handler measures (entry handler's last clock read to the return
 * handler's first) includes the probe's own work: leaving the entry handler, the kprobe's
 * exit path (breakpoint single-step, optimized jump or ftrace), the kretprobe trampoline and
 * its instance lookup. At load, the module puts a kretprobe with these same handlers on two
 * empty functions of its own, one traceable (ftrace-based kprobe) and one notrace (breakpoint,
 * optimized where the kernel can), calls each `calib` times and publishes the mean apparent
 * duration per call. Those probes never count as copies and are unregistered before init
 * returns, on every path.
 *
 * Output: /proc/copytrace, one record per line (parsed by kmod.parse()):
 *   version 2
 *   calib MECH NS_PER_CALL N                mean apparent duration of an empty call (3 decimals)
 *   probe IDX SYMBOL STATUS MISSED MECH     STATUS: ok | absent | error:-ERRNO
 *                                           MECH: ftrace | optimized | breakpoint | -
 *                                           MISSED: kretprobe misses + the kprobe's own
 *   gate IDX SYMBOL STATUS MISSED           a socket gate; MISSED includes tasks the
 *                                           in-socket table had no room for
 *   count IDX SLOT CALLS BYTES NS
 *   hist IDX SLOT B:N ...                   B = log2(ns) bucket
 *   sample IDX SLOT PID ADDR LEN NS         the last NSAMPLES copies, oldest first
 */
#include <linux/module.h>
#include <linux/kprobes.h>
#include <linux/net.h>
#include <linux/fs.h>
#include <net/sock.h>
#include <rdma/ib_verbs.h>
#include <linux/ptrace.h>
#include <linux/sched.h>
#include <linux/rcupdate.h>
#include <linux/proc_fs.h>
#include <linux/seq_file.h>
#include <linux/slab.h>
#include <linux/string.h>
#include <linux/ktime.h>
#include <linux/log2.h>
#include <linux/skbuff.h>
#include <linux/atomic.h>
#include <linux/delay.h>
#include <linux/math64.h>
#include <linux/unistd.h>
#include <linux/version.h>
#include <asm/syscall.h>

#define MAX_PROBES 16
#define MAX_SLOTS 9		/* 8 pids/comms + the "any task" slot */
#define MAX_FILTERS (MAX_SLOTS - 1)
#define ANY_SLOT (MAX_SLOTS - 1)
#define NBUCKETS 40
#define MAX_DEPTH 16
#define MAX_SAMPLES 4096
#define LEN_SKB_DATA_LEN (-2)
#define MAX_CALIB 100000
#define OUTPUT_VERSION 3
#define MAX_GATES 8
#define MAX_INSOCK 64		/* traced threads inside a socket operation at once */
#define MAX_FLOW_SOCKS 16	/* network sockets remembered per slot (attribution) */
enum { OWNER_NONE, OWNER_ZEROCOPY_SKB, OWNER_RXE_MR };

static char *symbols[MAX_PROBES];
static int nsymbols;
module_param_array(symbols, charp, &nsymbols, 0444);
MODULE_PARM_DESC(symbols, "name:ADDR_ARG:LEN_ARG:ANY,... copy functions to probe");

static int pids[MAX_FILTERS];
static int npids;
module_param_array(pids, int, &npids, 0444);
MODULE_PARM_DESC(pids, "processes (and their descendants) to count, one slot each");

static char *comm[MAX_FILTERS];
static int ncomm;
module_param_array(comm, charp, &ncomm, 0444);
MODULE_PARM_DESC(comm, "task names to count, one slot each (instead of pids)");

static int nsamples = 256;
module_param(nsamples, int, 0444);
MODULE_PARM_DESC(nsamples, "size of the (addr, len, pid) sample ring");

static bool sockonly = true;
module_param(sockonly, bool, 0444);
MODULE_PARM_DESC(sockonly, "count only copies made inside socket syscalls (not pipe/file I/O)");

static char *gates[MAX_GATES];
static int ngates;
module_param_array(gates, charp, &ngates, 0444);
MODULE_PARM_DESC(gates, "socket entry functions: copies inside them are socket copies");

static int stacks;
module_param(stacks, int, 0444);
MODULE_PARM_DESC(stacks, "log the kernel stack of the first N counted calls per probe (call chains)");

static int owner;
module_param(owner, int, 0444);
MODULE_PARM_DESC(owner, "pid of the copybench process that loaded us (for stale cleanup)");

static int rxe_ibmr = -1;
module_param(rxe_ibmr, int, 0444);
MODULE_PARM_DESC(rxe_ibmr, "offset of ibmr in rdma_rxe's struct rxe_mr (from its BTF; -1: none)");

static int calib = 10000;
module_param(calib, int, 0444);
MODULE_PARM_DESC(calib, "calls per probe-cost calibration (0 = none, at most 100000)");

static int maxactive = 256;
module_param(maxactive, int, 0444);
MODULE_PARM_DESC(maxactive, "copies in flight tracked per probe (more are counted as missed)");

struct counters {
	atomic64_t calls, bytes, ns;
	atomic64_t hist[NBUCKETS];
};

struct probe {
	struct kretprobe rp;
	char name[KSYM_NAME_LEN];
	int addr_arg, len_arg, any;
	int owner_kind;		/* how a copy outside the traced tasks finds its flow (OWNER_*) */
	bool calib;		/* probe-cost calibration: never a copy, never sampled */
	int status;		/* 0 registered, else the register error */
	atomic_t stacks_logged;
	struct counters c[MAX_SLOTS];
};

struct entry {			/* per-call data carried from entry to return */
	u64 t0;
	unsigned long addr;
	long len;
	int slot;
};

struct sample {
	unsigned long addr;
	long len;
	u64 ns;
	int pid, probe, slot;
};

static struct probe *probes;
static int nprobes;

/* Socket gates: which traced threads are inside a socket entry function, and how deep. */
enum gate_arg { GATE_SOCKET, GATE_KIOCB, GATE_OTHER };	/* what the first argument is */
struct gate {
	struct kretprobe rp;
	char name[KSYM_NAME_LEN];
	int status;
	enum gate_arg arg;
};
struct insock {
	struct task_struct *task;	/* NULL: free */
	pid_t pid;		/* with task: a task that died inside a gate (no return runs)
				 * leaves its entry, which a new task_struct at that address
				 * must not inherit */
	int depth;
};
static struct gate *gate_probes;
static int ngate_probes;
static struct insock insock_tab[MAX_INSOCK];
static DEFINE_RAW_SPINLOCK(insock_lock);
static atomic_t insock_full;	/* gate entries the table had no room for (lossy) */
static struct sample *ring;
static atomic_long_t ring_next;	/* total samples ever claimed */
static struct proc_dir_entry *proc_entry;

/* Probe-cost calibration results, one per probe mechanism (see the top of the file). */
struct calib_result {
	const char *mech;	/* NULL: not measured */
	u64 ns;
	u64 calls;
};
static struct calib_result calib_results[2];

static bool in_gate(void)
{
	unsigned long flags;
	bool in = false;
	int i;

	raw_spin_lock_irqsave(&insock_lock, flags);
	for (i = 0; i < MAX_INSOCK; i++)
		if (insock_tab[i].task == current && insock_tab[i].pid == current->pid) {
			in = true;
			break;
		}
	raw_spin_unlock_irqrestore(&insock_lock, flags);
	return in;
}

/* +1 on a gate's entry, -1 on its return; false: no room (counted as a miss). */
static bool gate_step(int step)
{
	unsigned long flags;
	int i, free = -1;
	bool ok = true;

	raw_spin_lock_irqsave(&insock_lock, flags);
	for (i = 0; i < MAX_INSOCK; i++) {
		if (insock_tab[i].task == current && insock_tab[i].pid == current->pid) {
			insock_tab[i].depth += step;
			if (insock_tab[i].depth <= 0)
				insock_tab[i].task = NULL;
			goto out;
		}
		if (!insock_tab[i].task && free < 0)
			free = i;
	}
	if (step > 0) {
		if (free >= 0) {
			insock_tab[free].task = current;
			insock_tab[free].pid = current->pid;
			insock_tab[free].depth = step;
		} else {
			ok = false;
		}
	}
out:
	raw_spin_unlock_irqrestore(&insock_lock, flags);
	return ok;
}

static int match_slot(void);

/* The struct sock behind a gate's first argument (NULL if none). */
static struct sock *gate_sock(const struct gate *g, struct pt_regs *regs)
{
	struct socket *sock = NULL;
	struct kiocb *iocb;

	if (g->arg == GATE_OTHER)	/* tcp_getsockopt(sk, ...) */
		return (struct sock *)regs_get_kernel_argument(regs, 0);
	if (g->arg == GATE_SOCKET) {
		sock = (struct socket *)regs_get_kernel_argument(regs, 0);
	} else if (g->arg == GATE_KIOCB) {
		iocb = (struct kiocb *)regs_get_kernel_argument(regs, 0);
		if (iocb && iocb->ki_filp)
			sock = iocb->ki_filp->private_data;
	}
	return sock ? sock->sk : NULL;
}

/*
 * Why: a copy that runs outside the flow's tasks (skb_copy_ubufs in ksoftirqd) can still be
 * tied to the flow by the socket its data came from. The gates see every network socket a
 * traced task uses; each slot keeps the first MAX_FLOW_SOCKS of them for the module's life
 * (one traced sample), and a table that fills up only leaves later copies unattributed.
 */
static struct sock *flow_socks[MAX_FILTERS][MAX_FLOW_SOCKS];
static DEFINE_RAW_SPINLOCK(flow_lock);

static void remember_sock(int slot, struct sock *sk)
{
	unsigned long flags;
	int i;

	if (slot < 0 || slot >= MAX_FILTERS || !sk)
		return;
	for (i = 0; i < MAX_FLOW_SOCKS; i++) {		/* lock-free: the common case */
		struct sock *s = READ_ONCE(flow_socks[slot][i]);

		if (s == sk)
			return;
		if (!s)
			break;
	}
	raw_spin_lock_irqsave(&flow_lock, flags);
	for (i = 0; i < MAX_FLOW_SOCKS; i++) {
		if (flow_socks[slot][i] == sk)
			break;
		if (!flow_socks[slot][i]) {
			WRITE_ONCE(flow_socks[slot][i], sk);
			break;
		}
	}
	raw_spin_unlock_irqrestore(&flow_lock, flags);
}

static int sock_slot(struct sock *sk)
{
	int slot, i;

	for (slot = 0; sk && slot < MAX_FILTERS; slot++)
		for (i = 0; i < MAX_FLOW_SOCKS; i++) {
			struct sock *s = READ_ONCE(flow_socks[slot][i]);

			if (!s)
				break;
			if (s == sk)
				return slot;
		}
	return -1;
}

/* The socket a MSG_ZEROCOPY skb's pages came from: its ubuf_info lives in the control block
 * of a notification skb that the sending socket owns (msg_zerocopy_alloc). io_uring's
 * zerocopy notifications are not of this kind and stay unattributed. */
static struct sock *zerocopy_owner(struct sk_buff *skb)
{
#if LINUX_VERSION_CODE < KERNEL_VERSION(6, 7, 0)
	struct ubuf_info *uarg = skb ? skb_zcopy(skb) : NULL;

	if (uarg && uarg->callback == msg_zerocopy_callback)
		return container_of((void *)uarg_to_msgzc(uarg), struct sk_buff, cb)->sk;
#endif
	return NULL;	/* later kernels changed the callback to ops: not attributed */
}

static int gate_entry(struct kretprobe_instance *ri, struct pt_regs *regs)
{
	struct kretprobe *rp = get_kretprobe(ri);
	int slot = match_slot();
	struct sock *sk;

	if (slot < 0)
		return 1;	/* not a traced task: no return probe */
	sk = rp ? gate_sock(container_of(rp, struct gate, rp), regs) : NULL;
	/* Why: a unix socket is local IPC, not a network path, and it is what a node launcher
	 * gives an agent as stdin/stdout: its JSON-lines control traffic (write/read on that
	 * socket) must not count as the flow's copies. No return probe, no depth. */
	if (sk && sk->sk_family == AF_UNIX)
		return 1;
	remember_sock(slot, sk);
	if (!gate_step(1)) {
		atomic_inc(&insock_full);
		return 1;
	}
	return 0;
}

static int gate_return(struct kretprobe_instance *ri, struct pt_regs *regs)
{
	gate_step(-1);
	return 0;
}

/*
 * Why: _copy_{from,to}_iter also serve pipes and files, so an agent's JSON-lines control
 * traffic and Python's imports would be counted as network copies. A socket operation is
 * what the gates say (the socket layer's entry functions, whatever syscall or io-wq worker
 * runs them), or a socket-only syscall (*mmsg skip sock_sendmsg/sock_recvmsg internally).
 */
static bool in_socket_call(void)
{
	long nr;

	if (!sockonly)
		return true;
	if (ngate_probes && in_gate())
		return true;
	nr = syscall_get_nr(current, task_pt_regs(current));
	switch (nr) {
	case __NR_sendto:
	case __NR_recvfrom:
	case __NR_sendmsg:
	case __NR_recvmsg:
	case __NR_sendmmsg:
#ifdef __NR_recvmmsg
	case __NR_recvmmsg:
#endif
	case __NR_getsockopt:	/* TCP_ZEROCOPY_RECEIVE copies what it cannot map */
		return true;
	}
	return false;
}

/* The slot of task t (its comm, or a traced pid among its ancestors), -1 if none. */
static int task_slot(struct task_struct *t)
{
	int i, depth, slot = -1;

	if (!t)
		return -1;
	if (ncomm) {
		for (i = 0; i < ncomm; i++)
			if (strncmp(t->comm, comm[i], TASK_COMM_LEN) == 0)
				return i;
		return -1;
	}
	rcu_read_lock();
	for (depth = 0; depth < MAX_DEPTH && t && t->pid > 0; depth++) {
		for (i = 0; i < npids; i++) {
			if (t->tgid == pids[i]) {
				slot = i;
				goto out;
			}
		}
		t = rcu_dereference(t->real_parent);
	}
out:
	rcu_read_unlock();
	return slot;
}

static int match_slot(void)
{
	return task_slot(current);
}

/* The task that registered a soft-RoCE memory region: the kernel's resource tracking keeps
 * it (ib_mr.res.task, held for user MRs), at the offset rdma_rxe's BTF gives for ibmr. */
static int rxe_mr_slot(void *mr)
{
	struct ib_mr *ibmr;

	if (!mr || rxe_ibmr < 0)
		return -1;
	ibmr = (struct ib_mr *)((char *)mr + rxe_ibmr);
	return task_slot(READ_ONCE(ibmr->res.task));
}

/* Which flow a copy outside the traced tasks belongs to, by what it copies. */
static int owner_slot(const struct probe *p, struct pt_regs *regs, unsigned long addr)
{
	switch (p->owner_kind) {
	case OWNER_ZEROCOPY_SKB:
		return sock_slot(zerocopy_owner((struct sk_buff *)addr));
	case OWNER_RXE_MR:
		return rxe_mr_slot((void *)regs_get_kernel_argument(regs, 0));
	}
	return -1;
}

static int entry_handler(struct kretprobe_instance *ri, struct pt_regs *regs)
{
	struct probe *p = container_of(get_kretprobe(ri), struct probe, rp);
	struct entry *e = (struct entry *)ri->data;
	int slot = match_slot();

	/* sockonly concerns the socket copy functions; ANY probes (rxe, zerocopy fallbacks)
	 * belong to the task whatever syscall it is in (e.g. ibv_post_send's write). */
	if (slot >= 0 && !p->any && !in_socket_call())
		slot = -1;
	if (p->calib)
		slot = 0;	/* the same work as a copy probe, then always timed */
	e->addr = p->addr_arg >= 0 ? regs_get_kernel_argument(regs, p->addr_arg) : 0;
	if (slot < 0 && p->any)
		slot = owner_slot(p, regs, e->addr);
	if (slot < 0) {
		if (!p->any)
			return 1;	/* not ours: no return probe */
		slot = ANY_SLOT;
	}
	e->slot = slot;
	if (p->len_arg >= 0)
		e->len = (long)regs_get_kernel_argument(regs, p->len_arg);
	else if (p->len_arg == LEN_SKB_DATA_LEN && e->addr)
		e->len = ((struct sk_buff *)e->addr)->data_len;
	else
		e->len = 0;
	if (stacks && atomic_inc_return(&p->stacks_logged) <= stacks) {
		pr_info("copytrace: call chain of %s (pid %d, len %ld):\n", p->name,
			current->tgid, e->len);
		dump_stack();
	}
	e->t0 = ktime_get_ns();	/* last: the copy's time excludes our own work */
	return 0;
}

static int return_handler(struct kretprobe_instance *ri, struct pt_regs *regs)
{
	struct probe *p = container_of(get_kretprobe(ri), struct probe, rp);
	struct entry *e = (struct entry *)ri->data;
	u64 ns = ktime_get_ns() - e->t0;
	struct counters *c = &p->c[e->slot];
	int b = ns ? min_t(int, ilog2(ns) + 1, NBUCKETS - 1) : 0;

	atomic64_inc(&c->calls);
	atomic64_add(e->len, &c->bytes);
	atomic64_add(ns, &c->ns);
	atomic64_inc(&c->hist[b]);
	if (ring && !p->calib) {
		/* Lock-free: a slot claimed by index; a reader may see one torn sample at the
		 * ring's head, which costs less than a lock on every copy. */
		unsigned long n = atomic_long_inc_return(&ring_next) - 1;
		struct sample *s = &ring[n % nsamples];

		s->addr = e->addr;
		s->len = e->len;
		s->ns = ns;
		s->pid = current->tgid;	/* the process, as the runner knows it */
		s->probe = p - probes;
		s->slot = e->slot;
	}
	return 0;
}

/* Empty functions the calibration probes sit on. The asm keeps the compiler from proving them
 * side-effect free and dropping the calls; the nops give the optimizer (jump-optimized
 * kprobes need 5 relocatable bytes) the same chance it has on a real copy function. */
static noinline void copytrace_calib_ftrace(void)
{
	asm volatile("nop; nop; nop; nop; nop; nop; nop; nop" ::: "memory");
}

static noinline notrace void copytrace_calib_plain(void)
{
	asm volatile("nop; nop; nop; nop; nop; nop; nop; nop; nop" ::: "memory");
}

static const char *mechanism(struct kprobe *kp)
{
	if (kprobe_ftrace(kp))
		return "ftrace";
	if (kp->flags & KPROBE_FLAG_OPTIMIZED)
		return "optimized";
	return "breakpoint";
}

static void calib_reset(struct probe *p)
{
	atomic64_set(&p->c[0].calls, 0);
	atomic64_set(&p->c[0].ns, 0);
}

static void calib_calls(void (*volatile fn)(void), int n)
{
	int i;

	for (i = 0; i < n; i++) {
		fn();
		if ((i & 1023) == 1023)
			cond_resched();
	}
}

/*
 * Time `calib` calls of fn under a kretprobe with the copy probes' handlers. The probe is
 * unregistered before returning, whatever happens. A breakpoint probe that the kernel can
 * optimize is given up to ~0.5 s to be optimized first (the copy probes, registered
 * before, are optimized by the same pass), and measured again if its mechanism changed
 * while it was being measured.
 */
static void calibrate(struct calib_result *r, void (*fn)(void))
{
	struct probe *p;
	const char *before;
	int err, tries;

	p = kzalloc(sizeof(*p), GFP_KERNEL);
	if (!p)
		return;
	strscpy(p->name, "calibration", sizeof(p->name));
	p->calib = true;
	p->addr_arg = p->len_arg = -1;
	p->rp.kp.addr = (kprobe_opcode_t *)fn;
	p->rp.entry_handler = entry_handler;
	p->rp.handler = return_handler;
	p->rp.data_size = sizeof(struct entry);
	p->rp.maxactive = 4;
	err = register_kretprobe(&p->rp);
	if (err) {
		pr_info("copytrace: calibration probe not registered (%d)\n", err);
		kfree(p);
		return;
	}
	if (!kprobe_ftrace(&p->rp.kp))
		for (tries = 0; tries < 50 && !(p->rp.kp.flags & KPROBE_FLAG_OPTIMIZED); tries++)
			msleep(10);
	for (tries = 0; tries < 2; tries++) {
		before = mechanism(&p->rp.kp);
		calib_reset(p);
		calib_calls(fn, calib);
		if (!strcmp(before, mechanism(&p->rp.kp)))
			break;
	}
	unregister_kretprobe(&p->rp);
	r->mech = before;
	r->ns = atomic64_read(&p->c[0].ns);
	r->calls = atomic64_read(&p->c[0].calls);
	kfree(p);
}

static int show(struct seq_file *m, void *v)
{
	int i, j, k;
	unsigned long n, first, total;
	struct sample *copy;

	seq_printf(m, "version %d\n", OUTPUT_VERSION);
	for (i = 0; i < ARRAY_SIZE(calib_results); i++) {
		struct calib_result *r = &calib_results[i];
		u64 milli;

		if (!r->mech || !r->calls)
			continue;
		milli = div64_u64(r->ns * 1000, r->calls);
		seq_printf(m, "calib %s %llu.%03llu %llu\n", r->mech,
			   (unsigned long long)div64_u64(milli, 1000),
			   (unsigned long long)(milli % 1000), (unsigned long long)r->calls);
	}
	for (i = 0; i < nprobes; i++) {
		struct probe *p = &probes[i];

		if (p->status == -ENOENT)
			seq_printf(m, "probe %d %s absent 0 -\n", i, p->name);
		else if (p->status)
			seq_printf(m, "probe %d %s error:%d 0 -\n", i, p->name, p->status);
		else
			seq_printf(m, "probe %d %s ok %lu %s\n", i, p->name,
				   (unsigned long)p->rp.nmissed + p->rp.kp.nmissed,
				   mechanism(&p->rp.kp));
		for (j = 0; j < MAX_SLOTS; j++) {
			struct counters *c = &p->c[j];

			if (!atomic64_read(&c->calls))
				continue;
			seq_printf(m, "count %d %d %lld %lld %lld\n", i, j,
				   (long long)atomic64_read(&c->calls),
				   (long long)atomic64_read(&c->bytes),
				   (long long)atomic64_read(&c->ns));
			seq_printf(m, "hist %d %d", i, j);
			for (k = 0; k < NBUCKETS; k++)
				if (atomic64_read(&c->hist[k]))
					seq_printf(m, " %d:%lld", k,
						   (long long)atomic64_read(&c->hist[k]));
			seq_putc(m, '\n');
		}
	}
	for (i = 0; i < ngate_probes; i++) {
		struct gate *g = &gate_probes[i];
		unsigned long missed = atomic_read(&insock_full);

		if (g->status == -ENOENT)
			seq_printf(m, "gate %d %s absent 0\n", i, g->name);
		else if (g->status)
			seq_printf(m, "gate %d %s error:%d 0\n", i, g->name, g->status);
		else
			seq_printf(m, "gate %d %s ok %lu\n", i, g->name,
				   missed + g->rp.nmissed + g->rp.kp.nmissed);
	}
	if (!ring)
		return 0;
	copy = kmalloc_array(nsamples, sizeof(*copy), GFP_KERNEL);
	if (!copy)
		return -ENOMEM;
	total = atomic_long_read(&ring_next);
	n = min_t(unsigned long, total, nsamples);
	first = total - n;
	for (k = 0; k < n; k++)
		copy[k] = ring[(first + k) % nsamples];
	for (k = 0; k < n; k++)
		seq_printf(m, "sample %d %d %d 0x%lx %ld %llu\n", copy[k].probe, copy[k].slot,
			   copy[k].pid, copy[k].addr, copy[k].len, copy[k].ns);
	kfree(copy);
	return 0;
}

static int parse_symbol(struct probe *p, const char *spec)
{
	char buf[KSYM_NAME_LEN + 32], *rest, *name, *tok;
	int vals[3] = { -1, -1, 0 }, i;

	strscpy(buf, spec, sizeof(buf));
	rest = buf;
	name = strsep(&rest, ":");
	if (!name || !*name)
		return -EINVAL;
	for (i = 0; i < 3 && (tok = strsep(&rest, ":")); i++)
		if (kstrtoint(tok, 10, &vals[i]))
			return -EINVAL;
	strscpy(p->name, name, sizeof(p->name));
	p->addr_arg = vals[0];
	p->len_arg = vals[1];
	p->any = vals[2];
	return 0;
}

static void unregister_all(void)
{
	int i;

	for (i = 0; i < nprobes; i++)
		if (!probes[i].status)
			unregister_kretprobe(&probes[i].rp);
	for (i = 0; i < ngate_probes; i++)
		if (!gate_probes[i].status)
			unregister_kretprobe(&gate_probes[i].rp);
	ngate_probes = 0;
}

static int register_gates(void)
{
	int i;

	if (!sockonly || !ngates)
		return 0;
	gate_probes = kcalloc(ngates, sizeof(*gate_probes), GFP_KERNEL);
	if (!gate_probes)
		return -ENOMEM;
	for (i = 0; i < ngates; i++) {
		struct gate *g = &gate_probes[i];

		strscpy(g->name, gates[i], sizeof(g->name));
		/* sock_{write,read}_iter(kiocb, iter); sock_sendmsg/__sock_sendmsg/sock_recvmsg
		 * (socket, msghdr...); tcp_getsockopt(sk...) is TCP's own. */
		g->arg = strstr(g->name, "_iter") ? GATE_KIOCB :
			 strncmp(g->name, "tcp_", 4) ? GATE_SOCKET : GATE_OTHER;
		g->rp.kp.symbol_name = g->name;
		g->rp.entry_handler = gate_entry;
		g->rp.handler = gate_return;
		g->rp.maxactive = maxactive;
		g->status = register_kretprobe(&g->rp);
		if (g->status)
			pr_info("copytrace: gate %s not probed (%d)\n", g->name, g->status);
	}
	ngate_probes = ngates;
	return 0;
}

static int __init copytrace_init(void)
{
	int i, err, ok = 0;

	if (!npids && !ncomm) {
		pr_err("copytrace: give pids= or comm=, tracing every task is not supported\n");
		return -EINVAL;
	}
	if (nsymbols == 0)
		return -EINVAL;
	if (nsamples < 0 || nsamples > MAX_SAMPLES)
		return -EINVAL;
	if (calib < 0 || calib > MAX_CALIB)
		return -EINVAL;
	probes = kcalloc(nsymbols, sizeof(*probes), GFP_KERNEL);
	if (!probes)
		return -ENOMEM;
	if (nsamples) {
		ring = kcalloc(nsamples, sizeof(*ring), GFP_KERNEL);
		if (!ring) {
			kfree(probes);
			return -ENOMEM;
		}
	}
	/* Gates first: a copy probe live before its gate would drop the first copies. */
	err = register_gates();
	if (err) {
		nprobes = 0;
		goto fail;
	}
	for (i = 0; i < nsymbols; i++) {
		struct probe *p = &probes[i];

		err = parse_symbol(p, symbols[i]);
		if (err) {
			nprobes = i;
			goto fail;
		}
		p->rp.kp.symbol_name = p->name;
		/* skb_copy_ubufs(skb, gfp): the skb's sending socket; rxe_mr_copy(mr, ...): the MR's
		 * registering task */
		p->owner_kind = p->len_arg == LEN_SKB_DATA_LEN ? OWNER_ZEROCOPY_SKB :
				!strcmp(p->name, "rxe_mr_copy") ? OWNER_RXE_MR : OWNER_NONE;
		p->rp.entry_handler = entry_handler;
		p->rp.handler = return_handler;
		p->rp.data_size = sizeof(struct entry);
		p->rp.maxactive = maxactive;
		/* An absent or notrace-protected symbol is reported, not fatal. */
		p->status = register_kretprobe(&p->rp);
		if (!p->status)
			ok++;
		else
			pr_info("copytrace: %s not probed (%d)\n", p->name, p->status);
	}
	nprobes = nsymbols;
	if (calib && ok) {
		calibrate(&calib_results[0], copytrace_calib_ftrace);
		calibrate(&calib_results[1], copytrace_calib_plain);
	}
	proc_entry = proc_create_single("copytrace", 0400, NULL, show);
	if (!proc_entry) {
		err = -ENOMEM;
		goto fail;
	}
	pr_info("copytrace: %d of %d probes registered\n", ok, nprobes);
	return 0;
fail:
	unregister_all();
	kfree(gate_probes);
	kfree(ring);
	kfree(probes);
	return err;
}

static void __exit copytrace_exit(void)
{
	proc_remove(proc_entry);
	unregister_all();
	kfree(gate_probes);
	kfree(ring);
	kfree(probes);
}

module_init(copytrace_init);
module_exit(copytrace_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("copybench: count, time and sample kernel data copies per process");
