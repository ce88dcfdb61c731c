// SPDX-License-Identifier: GPL-2.0-only
/*
 * Nested test of the introvisor KVM write trap (kernel-patches/).
 *
 * Runs inside a guest that has the patched kvm.ko/kvm-amd.ko loaded.  The
 * main process plays the VMM (like QEMU): it creates a VM through /dev/kvm
 * and runs a long-mode vCPU.  A forked child plays the supervisor: it drops
 * the fds it inherited, finds the VM fd in /proc/<vmm>/fd, duplicates it
 * with pidfd_getfd(2), attaches the trap through /dev/kvm and serves the
 * VMM's requests (arm ranges, read the log, close) over a socket.
 *
 * Output: "TRAP ok - ..." / "TRAP not ok - ..." per check, "TRAP measure
 * ..." lines, and "TRAP done" at the end.  test/trap/run-nested.sh turns
 * them into TAP.  Exit status 0 only if every check passed.
 *
 * Build: gcc -static -O2 -Wall -I kernel-patches/uapi -o trap_test trap_test.c
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/kvm.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "introvisor_trap.h"

/* ---- guest physical layout ------------------------------------------- */
#define PML4		0x1000
#define PDPT		0x2000
#define PD		0x3000
#define PT		0x4000
#define GDT		0x5000
#define IDT		0x6000
#define STACK_TOP	0x7ff0
#define CODE		0x8000
#define RESULTS		0x9000	/* [0] #GP count, [8] #GP rip, [16] error code */
#define LOW_SIZE	0x100000	/* slot 0: 0 .. 1 MiB */
#define TABLE		0x100000	/* slot 1: the "sys_call_table" page */
#define PLAIN		0x101000	/* slot 1: a page nobody protects */
#define HIGH_SIZE	0x4000

#define RANGE_A		(TABLE + 0x100)	/* DROP */
#define RANGE_B		(TABLE + 0x140)	/* GP */
#define RANGE_LEN	0x40
#define NEAR_LOW	(TABLE + 0x80)
#define NEAR_HIGH	(TABLE + 0x1c0)

#define PORT_DONE	0x10
#define PORT_BAD	0x11

/* ---- guest code --------------------------------------------------------
 * Snippets the host enters by setting RIP.  Each ends at a "done" label
 * with OUT to PORT_DONE; r15 holds that label so the #GP handler can
 * resume there.
 */
extern const char g_begin[], g_end[];
extern const char g_store[], g_cmpxchg[], g_stos[], g_rep_stos[], g_sgdt[];
extern const char g_maskmovq[], g_maskmovq_insn[], g_loop[], g_done[];
extern const char g_gp_handler[], g_bad_handler[];

asm(".pushsection .text.guest, \"ax\"\n"
    ".code64\n"
    ".globl g_begin, g_store, g_cmpxchg, g_stos, g_rep_stos, g_sgdt\n"
    ".globl g_maskmovq, g_maskmovq_insn, g_loop, g_done, g_end\n"
    ".globl g_gp_handler, g_bad_handler\n"
    "g_begin:\n"
    "g_store:	movq %rax, (%rdi)\n"
    "		jmp g_done\n"
    "g_cmpxchg:	lock cmpxchgq %rbx, (%rdi)\n"
    "		jmp g_done\n"
    "g_stos:	stosq\n"
    "		jmp g_done\n"
    "g_rep_stos:	rep stosq\n"
    "		jmp g_done\n"
    "g_sgdt:	sgdt (%rdi)\n"
    "		jmp g_done\n"
    "g_maskmovq:	movq %rax, %mm0\n"
    "		pcmpeqb %mm1, %mm1\n"
    "g_maskmovq_insn: maskmovq %mm1, %mm0\n"
    "		emms\n"
    "		jmp g_done\n"
    "g_loop:	movq %rax, (%rdi)\n"
    "		decq %rcx\n"
    "		jnz g_loop\n"
    "g_done:	outb %al, $0x10\n"
    "		hlt\n"
    "g_gp_handler:	incq 0x9000\n"
    "		movq 8(%rsp), %r14\n"
    "		movq %r14, 0x9008\n"
    "		movq (%rsp), %r14\n"
    "		movq %r14, 0x9010\n"
    "		addq $8, %rsp\n"
    "		movq %r15, (%rsp)\n"
    "		iretq\n"
    "g_bad_handler:	movq (%rsp), %rbx\n"
    "		movq 8(%rsp), %rcx\n"
    "		outb %al, $0x11\n"
    "		hlt\n"
    "g_end:\n"
    ".popsection\n");

#define GADDR(sym) ((uint64_t)(CODE + ((sym) - g_begin)))

/* ---- reporting ---------------------------------------------------------- */
static const char *mode = "?";
static int failures, checks;

static void check(bool ok, const char *fmt, ...)
{
	va_list ap;

	checks++;
	if (!ok)
		failures++;
	printf("TRAP %s - %s: ", ok ? "ok" : "not ok", mode);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
}

static void note(const char *fmt, ...)
{
	va_list ap;

	printf("# ");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
}

static void die(const char *what)
{
	printf("TRAP not ok - %s: fatal: %s: %s\n", mode, what, strerror(errno));
	printf("TRAP done\n");
	fflush(stdout);
	exit(1);
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

/* ---- supervisor (child) ------------------------------------------------- */
enum { OP_ADD = 1, OP_DEL, OP_LIST, OP_READ, OP_STATS, OP_CLOSE, OP_QUIT };

struct cmd {
	int op;
	struct introvisor_trap_range range;
};

#define MAX_RECS 32
struct reply {
	int ret;		/* 0 or -errno */
	int n;			/* records or ranges */
	struct introvisor_trap_stats stats;
	struct introvisor_trap_range ranges[8];
	struct introvisor_trap_record recs[MAX_RECS];
};

struct attach_report {
	int attach_ret;		/* fd or -errno */
	int vm_ioctl_errno;	/* errno of a VM ioctl from the supervisor */
	int second_attach_errno;
	int nocap_errno;
	int found_in_proc;
};

static int find_vm_fd(pid_t pid)
{
	char dir[64], path[600], target[256];
	struct dirent *de;
	int found = -1;
	DIR *d;

	snprintf(dir, sizeof(dir), "/proc/%d/fd", pid);
	d = opendir(dir);
	if (!d)
		return -1;
	while ((de = readdir(d))) {
		ssize_t n;

		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		n = readlink(path, target, sizeof(target) - 1);
		if (n <= 0)
			continue;
		target[n] = 0;
		if (!strcmp(target, "anon_inode:kvm-vm")) {
			found = atoi(de->d_name);
			break;
		}
	}
	closedir(d);
	return found;
}

static int attach(int kvm, int vm_fd, uint32_t ring)
{
	struct introvisor_trap_attach a = { .vm_fd = vm_fd, .ring_records = ring };
	int r = ioctl(kvm, INTROVISOR_TRAP_ATTACH, &a);

	return r < 0 ? -errno : r;
}

/* Try to attach without CAP_SYS_ADMIN, in a grandchild. */
static int attach_without_cap(int kvm, int vm_fd)
{
	int st, pfd[2];
	pid_t pid;
	int err = 0;

	if (pipe(pfd))
		return -1;
	pid = fork();
	if (pid == 0) {
		struct { uint32_t version; int pid; } hdr = { 0x20080522, 0 };
		struct { uint32_t eff, perm, inh; } data[2];
		int r;

		syscall(SYS_capget, &hdr, data);
		data[0].eff &= ~(1u << 21);	/* CAP_SYS_ADMIN */
		data[0].perm &= ~(1u << 21);
		if (syscall(SYS_capset, &hdr, data))
			_exit(2);
		r = attach(kvm, vm_fd, 0);
		if (r >= 0)
			close(r);
		r = r < 0 ? -r : 0;
		if (write(pfd[1], &r, sizeof(r)) != sizeof(r))
			_exit(3);
		_exit(0);
	}
	close(pfd[1]);
	if (read(pfd[0], &err, sizeof(err)) != sizeof(err))
		err = -1;
	close(pfd[0]);
	waitpid(pid, &st, 0);
	return err;
}

static void supervisor(int sock, pid_t vmm)
{
	struct attach_report rep = { 0 };
	int pidfd, vm_fd, kvm, trap = -1, fd;
	struct reply *out = calloc(1, sizeof(*out));
	struct cmd c;

	/* Drop everything inherited from the VMM but the socket and stdio. */
	for (fd = 3; fd < 256; fd++)
		if (fd != sock)
			close(fd);

	fd = find_vm_fd(vmm);
	rep.found_in_proc = fd >= 0;
	pidfd = syscall(SYS_pidfd_open, vmm, 0);
	vm_fd = pidfd < 0 || fd < 0 ? -1 : syscall(SYS_pidfd_getfd, pidfd, fd, 0);
	kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (vm_fd < 0 || kvm < 0) {
		rep.attach_ret = -errno;
	} else {
		if (ioctl(vm_fd, KVM_CHECK_EXTENSION, KVM_CAP_USER_MEMORY) < 0)
			rep.vm_ioctl_errno = errno;
		rep.nocap_errno = attach_without_cap(kvm, vm_fd);
		rep.attach_ret = trap = attach(kvm, vm_fd, 0);
		if (trap >= 0) {
			int r2 = attach(kvm, vm_fd, 0);

			rep.second_attach_errno = r2 < 0 ? -r2 : 0;
			if (r2 >= 0)
				close(r2);
		}
	}
	if (write(sock, &rep, sizeof(rep)) != sizeof(rep))
		_exit(1);

	while (read(sock, &c, sizeof(c)) == sizeof(c)) {
		memset(out, 0, sizeof(*out));
		switch (c.op) {
		case OP_ADD:
			out->ret = ioctl(trap, INTROVISOR_TRAP_ADD_RANGE, &c.range) ? -errno : 0;
			break;
		case OP_DEL:
			out->ret = ioctl(trap, INTROVISOR_TRAP_DEL_RANGE, &c.range) ? -errno : 0;
			break;
		case OP_LIST: {
			struct introvisor_trap_list l = {
				.count = 8, .ranges = (uintptr_t)out->ranges,
			};
			out->ret = ioctl(trap, INTROVISOR_TRAP_LIST, &l) ? -errno : 0;
			out->n = l.count;
			break;
		}
		case OP_READ: {
			ssize_t n;

			fcntl(trap, F_SETFL, O_NONBLOCK);
			n = read(trap, out->recs, sizeof(out->recs));
			if (n < 0) {
				out->ret = errno == EAGAIN ? 0 : -errno;
				out->n = 0;
			} else {
				out->n = n / sizeof(out->recs[0]);
				out->ret = n % sizeof(out->recs[0]) ? -EIO : 0;
			}
			break;
		}
		case OP_STATS:
			out->ret = ioctl(trap, INTROVISOR_TRAP_GET_STATS, &out->stats) ? -errno : 0;
			break;
		case OP_CLOSE:
			out->ret = close(trap) ? -errno : 0;
			trap = -1;
			break;
		case OP_QUIT:
			break;
		}
		if (write(sock, out, sizeof(*out)) != sizeof(*out))
			_exit(1);
		if (c.op == OP_QUIT)
			break;
	}
	_exit(0);
}

/* ---- VMM (parent) ------------------------------------------------------- */
static int kvm_fd, vm_fd, vcpu_fd, stats_fd, sock;
static struct kvm_run *run;
static uint8_t *low, *high;
static struct reply rep;
static long exits_off = -1;

static struct reply *sv(int op, uint64_t gpa, uint64_t len, uint32_t action)
{
	struct cmd c = { .op = op, .range = { .gpa = gpa, .len = len, .action = action } };

	if (write(sock, &c, sizeof(c)) != sizeof(c))
		die("supervisor write");
	if (read(sock, &rep, sizeof(rep)) != sizeof(rep))
		die("supervisor read");
	return &rep;
}

static uint8_t *gpa_ptr(uint64_t gpa)
{
	if (gpa < LOW_SIZE)
		return low + gpa;
	return high + (gpa - TABLE);
}

static uint64_t rd64(uint64_t gpa)
{
	uint64_t v;

	memcpy(&v, gpa_ptr(gpa), 8);
	return v;
}

static void wr64(uint64_t gpa, uint64_t v)
{
	memcpy(gpa_ptr(gpa), &v, 8);
}

static void set_memslot(int slot, uint64_t gpa, uint64_t size, void *mem)
{
	struct kvm_userspace_memory_region r = {
		.slot = slot, .guest_phys_addr = gpa, .memory_size = size,
		.userspace_addr = (uintptr_t)mem,
	};

	if (ioctl(vm_fd, KVM_SET_USER_MEMORY_REGION, &r))
		die("KVM_SET_USER_MEMORY_REGION");
}

static void find_exits_stat(void)
{
	struct kvm_stats_header h;
	size_t dsz;
	char *descs;
	uint32_t i;

	stats_fd = ioctl(vcpu_fd, KVM_GET_STATS_FD, NULL);
	if (stats_fd < 0 || pread(stats_fd, &h, sizeof(h), 0) != sizeof(h))
		return;
	dsz = sizeof(struct kvm_stats_desc) + h.name_size;
	descs = calloc(h.num_desc, dsz);
	if (pread(stats_fd, descs, h.num_desc * dsz, h.desc_offset) != (ssize_t)(h.num_desc * dsz))
		return;
	for (i = 0; i < h.num_desc; i++) {
		struct kvm_stats_desc *d = (void *)(descs + i * dsz);

		if (!strcmp(d->name, "exits"))
			exits_off = h.data_offset + d->offset;
	}
	free(descs);
}

static uint64_t vcpu_exits(void)
{
	uint64_t v = 0;

	if (exits_off >= 0 && pread(stats_fd, &v, 8, exits_off) != 8)
		v = 0;
	return v;
}

static void setup_guest(void)
{
	uint64_t *pml4 = (void *)(low + PML4), *pdpt = (void *)(low + PDPT);
	uint64_t *pd = (void *)(low + PD), *pt = (void *)(low + PT);
	uint64_t *gdt = (void *)(low + GDT), *idt = (void *)(low + IDT);
	int i;

	pml4[0] = PDPT | 3;
	pdpt[0] = PD | 3;
	pd[0] = PT | 3;
	for (i = 0; i < 512; i++)
		pt[i] = ((uint64_t)i << 12) | 3;
	gdt[0] = 0;
	gdt[1] = 0x00af9b000000ffffull;	/* 0x08: 64-bit code */
	gdt[2] = 0x00cf93000000ffffull;	/* 0x10: data */
	gdt[3] = 0x00008b0000000067ull;	/* 0x18: busy TSS (never used) */
	for (i = 0; i < 32; i++) {
		uint64_t h = i == 13 ? GADDR(g_gp_handler) : GADDR(g_bad_handler);

		idt[2 * i] = (h & 0xffff) | (0x08ull << 16) | (0x8eull << 40) |
			     ((h >> 16 & 0xffff) << 48);
		idt[2 * i + 1] = h >> 32;
	}
	memcpy(low + CODE, g_begin, g_end - g_begin);
}

static void setup_vcpu(void)
{
	struct kvm_segment code = {
		.base = 0, .limit = 0xffffffff, .selector = 0x08, .type = 11,
		.present = 1, .dpl = 0, .db = 0, .s = 1, .l = 1, .g = 1,
	};
	struct kvm_segment data = {
		.base = 0, .limit = 0xffffffff, .selector = 0x10, .type = 3,
		.present = 1, .dpl = 0, .db = 1, .s = 1, .l = 0, .g = 1,
	};
	struct kvm_segment tr = {
		.base = 0, .limit = 0x67, .selector = 0x18, .type = 11,
		.present = 1, .s = 0,
	};
	struct kvm_cpuid2 *cpuid;
	struct kvm_sregs sregs;

	cpuid = calloc(1, sizeof(*cpuid) + 256 * sizeof(struct kvm_cpuid_entry2));
	cpuid->nent = 256;
	if (ioctl(kvm_fd, KVM_GET_SUPPORTED_CPUID, cpuid) ||
	    ioctl(vcpu_fd, KVM_SET_CPUID2, cpuid))
		die("cpuid");
	free(cpuid);

	if (ioctl(vcpu_fd, KVM_GET_SREGS, &sregs))
		die("KVM_GET_SREGS");
	sregs.cs = code;
	sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss = data;
	sregs.tr = tr;
	sregs.gdt.base = GDT;
	sregs.gdt.limit = 4 * 8 - 1;
	sregs.idt.base = IDT;
	sregs.idt.limit = 32 * 16 - 1;
	sregs.cr0 = 0x80050033;	/* PG WP NE ET MP PE */
	sregs.cr3 = PML4;
	sregs.cr4 = 0x20;		/* PAE */
	sregs.efer = 0x500;		/* LMA LME */
	if (ioctl(vcpu_fd, KVM_SET_SREGS, &sregs))
		die("KVM_SET_SREGS");
}

struct step {
	uint64_t rip, rax, rbx, rcx, rdi;
	struct kvm_regs out;	/* registers at the end */
	int port;		/* PORT_DONE, PORT_BAD, or -1 */
	uint64_t ns, exits;
};

static void run_step(struct step *s)
{
	struct kvm_regs regs = { 0 };
	uint64_t t0, e0;
	int guard;

	regs.rip = s->rip;
	regs.rax = s->rax;
	regs.rbx = s->rbx;
	regs.rcx = s->rcx;
	regs.rdi = s->rdi;
	regs.r15 = GADDR(g_done);
	regs.rsp = STACK_TOP;
	regs.rflags = 0x2;
	if (ioctl(vcpu_fd, KVM_SET_REGS, &regs))
		die("KVM_SET_REGS");

	s->port = -1;
	e0 = vcpu_exits();
	t0 = now_ns();
	alarm(60);
	for (guard = 0; guard < 100; guard++) {
		if (ioctl(vcpu_fd, KVM_RUN, NULL) < 0) {
			if (errno == EINTR) {
				note("%s: vCPU did not finish the step within 60 s", mode);
				break;
			}
			die("KVM_RUN");
		}
		if (run->exit_reason == KVM_EXIT_IO &&
		    (run->io.port == PORT_DONE || run->io.port == PORT_BAD)) {
			s->port = run->io.port;
			break;
		}
		note("%s: unexpected exit reason %u", mode, run->exit_reason);
		if (run->exit_reason != KVM_EXIT_IO)
			break;
	}
	alarm(0);
	s->ns = now_ns() - t0;
	s->exits = vcpu_exits() - e0;
	if (ioctl(vcpu_fd, KVM_GET_REGS, &s->out))
		die("KVM_GET_REGS");
	if (s->port == PORT_BAD)
		note("%s: guest exception: rbx=%#llx rcx=%#llx", mode,
		     (unsigned long long)s->out.rbx, (unsigned long long)s->out.rcx);
}

static void alarm_handler(int sig)
{
	(void)sig;
	/* Only interrupts KVM_RUN: a vCPU stuck in a step is reported. */
}

#define REPS 5

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static uint64_t table_init(int i)
{
	return 0xffffffff81000000ull + 0x10 * i;
}

static void reset_table(void)
{
	int i;

	for (i = 0; i < 512; i++)
		wr64(TABLE + 8 * i, table_init(i));
}

static bool table_intact(void)
{
	int i;

	for (i = 0; i < 512; i++) {
		uint64_t gpa = TABLE + 8 * i;

		if (gpa >= RANGE_A && gpa < RANGE_B + RANGE_LEN &&
		    rd64(gpa) != table_init(i))
			return false;
	}
	return true;
}

/* Read the log; expect @n records. */
static struct reply *read_log(void)
{
	return sv(OP_READ, 0, 0, 0);
}

static bool rec_is(const struct introvisor_trap_record *r, uint64_t gpa,
		   uint64_t rip, uint32_t len, const void *data, uint16_t action,
		   uint16_t source)
{
	bool ok = r->gpa == gpa && r->rip == rip && r->len == len &&
		  r->action == action && r->source == source && r->vcpu_id == 0 &&
		  r->time_ns > 0;

	if (data)
		ok = ok && r->data_len == (len < 32 ? len : 32) &&
		     !memcmp(r->data, data, r->data_len);
	/* The instruction bytes are the guest's (none for write_std). */
	if (source == INTROVISOR_TRAP_SRC_WRITE_STD)
		ok = ok && r->insn_len == 0;
	else
		ok = ok && r->insn_len > 0 && r->insn_len <= 15 &&
		     !memcmp(r->insn, low + rip, r->insn_len) &&
		     !!(r->flags & INTROVISOR_TRAP_REC_INSN_UNDECODED) ==
		     (source == INTROVISOR_TRAP_SRC_UNEMULATED);
	if (!ok)
		note("%s: record seq=%llu gpa=%#llx rip=%#llx len=%u action=%u source=%u data_len=%u insn_len=%u",
		     mode, (unsigned long long)r->seq, (unsigned long long)r->gpa,
		     (unsigned long long)r->rip, r->len, r->action, r->source,
		     r->data_len, r->insn_len);
	return ok;
}

static uint64_t gp_count(void)
{
	return rd64(RESULTS);
}

/* One refused write, checked end to end. */
static void refused(const char *what, struct step *s, uint64_t target,
		    uint32_t len, const void *data, uint16_t action,
		    uint16_t source, uint64_t insn_rip)
{
	uint64_t gp0 = gp_count();
	struct reply *r;

	reset_table();
	run_step(s);
	check(s->port == PORT_DONE, "%s: guest reached the end", what);
	check(table_intact(), "%s: protected bytes unchanged", what);
	if (action == INTROVISOR_TRAP_ACTION_GP)
		check(gp_count() == gp0 + 1 && rd64(RESULTS + 8) == insn_rip &&
		      rd64(RESULTS + 16) == 0,
		      "%s: guest got #GP(0) at the instruction (RIP stays)", what);
	else
		check(gp_count() == gp0, "%s: no #GP, instruction completed", what);
	r = read_log();
	check(r->ret == 0 && r->n == 1 &&
	      rec_is(&r->recs[0], target, insn_rip, len, data, action, source),
	      "%s: one log record with gpa/rip/len/bytes/insn/action", what);
}

static void allowed(const char *what, struct step *s, uint64_t target,
		    uint64_t expect)
{
	struct reply *r;

	reset_table();
	run_step(s);
	r = read_log();
	check(s->port == PORT_DONE && rd64(target) == expect && table_intact() &&
	      r->n == 0, "%s: neighbour on the same page written, nothing logged", what);
}

int main(int argc, char **argv)
{
	struct attach_report ar;
	struct step s;
	struct reply *r;
	int sp[2], i;
	pid_t child;
	uint64_t val = 0x4141414141414141ull, val2 = 0x4242424242424242ull;
	unsigned int loops = 1000;

	if (argc > 1)
		mode = argv[1];
	if (argc > 2)
		loops = atoi(argv[2]);
	setvbuf(stdout, NULL, _IOLBF, 0);
	{
		struct sigaction sa = { .sa_handler = alarm_handler };

		sigaction(SIGALRM, &sa, NULL);	/* no SA_RESTART: KVM_RUN returns EINTR */
	}

	kvm_fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (kvm_fd < 0)
		die("open /dev/kvm");
	vm_fd = ioctl(kvm_fd, KVM_CREATE_VM, 0);
	if (vm_fd < 0)
		die("KVM_CREATE_VM");
	low = mmap(NULL, LOW_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	high = mmap(NULL, HIGH_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (low == MAP_FAILED || high == MAP_FAILED)
		die("mmap");
	setup_guest();
	set_memslot(0, 0, LOW_SIZE, low);
	set_memslot(1, TABLE, HIGH_SIZE, high);
	vcpu_fd = ioctl(vm_fd, KVM_CREATE_VCPU, 0);
	if (vcpu_fd < 0)
		die("KVM_CREATE_VCPU");
	run = mmap(NULL, ioctl(kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0), PROT_READ | PROT_WRITE,
		   MAP_SHARED, vcpu_fd, 0);
	if (run == MAP_FAILED)
		die("mmap kvm_run");
	setup_vcpu();
	find_exits_stat();

	/* Warm up: the guest runs before any trap exists. */
	memset(&s, 0, sizeof(s));
	s.rip = GADDR(g_store);
	s.rdi = PLAIN;
	s.rax = val;
	run_step(&s);
	check(s.port == PORT_DONE && rd64(PLAIN) == val, "long-mode guest runs");

	/* The supervisor: a second process. */
	if (socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sp))
		die("socketpair");
	child = fork();
	if (child < 0)
		die("fork");
	if (child == 0) {
		close(sp[0]);
		supervisor(sp[1], getppid());
	}
	close(sp[1]);
	sock = sp[0];
	if (read(sock, &ar, sizeof(ar)) != sizeof(ar))
		die("attach report");
	check(ar.found_in_proc, "supervisor finds anon_inode:kvm-vm in /proc/<vmm>/fd");
	check(ar.vm_ioctl_errno == EIO, "VM ioctl from the supervisor's mm is refused (EIO)");
	check(ar.nocap_errno == EPERM, "attach without CAP_SYS_ADMIN is refused (EPERM)");
	check(ar.attach_ret >= 0, "supervisor attaches via pidfd_getfd + INTROVISOR_TRAP_ATTACH (%d)",
	      ar.attach_ret);
	if (ar.attach_ret < 0) {
		printf("TRAP done\n");
		return 1;
	}
	check(ar.second_attach_errno == EBUSY, "second attach to the same VM is refused (EBUSY)");

	r = sv(OP_ADD, RANGE_A, RANGE_LEN, INTROVISOR_TRAP_ACTION_DROP);
	check(r->ret == 0, "add range A (drop)");
	r = sv(OP_ADD, RANGE_B, RANGE_LEN, INTROVISOR_TRAP_ACTION_GP);
	check(r->ret == 0, "add range B (#GP)");
	r = sv(OP_ADD, RANGE_A + 8, 8, INTROVISOR_TRAP_ACTION_GP);
	check(r->ret == -EEXIST, "overlapping range is refused (EEXIST)");
	r = sv(OP_LIST, 0, 0, 0);
	check(r->ret == 0 && r->n == 2 && r->ranges[0].gpa == RANGE_A &&
	      r->ranges[0].len == RANGE_LEN && r->ranges[0].action == INTROVISOR_TRAP_ACTION_DROP &&
	      r->ranges[1].gpa == RANGE_B && r->ranges[1].action == INTROVISOR_TRAP_ACTION_GP,
	      "list ranges");

	/* --- drop ----------------------------------------------------------- */
	s = (struct step){ .rip = GADDR(g_store), .rdi = RANGE_A + 8, .rax = val };
	refused("drop: mov store", &s, RANGE_A + 8, 8, &val, INTROVISOR_TRAP_ACTION_DROP,
		INTROVISOR_TRAP_SRC_EMULATED, GADDR(g_store));
	s = (struct step){ .rip = GADDR(g_store), .rdi = NEAR_LOW, .rax = val };
	allowed("drop: mov store", &s, NEAR_LOW, val);

	s = (struct step){ .rip = GADDR(g_cmpxchg), .rdi = RANGE_A + 16,
			   .rax = table_init(0x22), .rbx = val2 };
	refused("drop: lock cmpxchg", &s, RANGE_A + 16, 8, &val2, INTROVISOR_TRAP_ACTION_DROP,
		INTROVISOR_TRAP_SRC_CMPXCHG, GADDR(g_cmpxchg));
	check(s.out.rflags & 0x40, "drop: lock cmpxchg: guest sees success (ZF=1)");
	s = (struct step){ .rip = GADDR(g_cmpxchg), .rdi = NEAR_HIGH,
			   .rax = table_init(0x38), .rbx = val2 };
	allowed("drop: lock cmpxchg", &s, NEAR_HIGH, val2);

	s = (struct step){ .rip = GADDR(g_stos), .rdi = RANGE_A + 24, .rax = val };
	refused("drop: stosq", &s, RANGE_A + 24, 8, &val, INTROVISOR_TRAP_ACTION_DROP,
		INTROVISOR_TRAP_SRC_EMULATED, GADDR(g_stos));
	check(s.out.rdi == RANGE_A + 32, "drop: stosq: RDI advanced past the dropped store");
	s = (struct step){ .rip = GADDR(g_stos), .rdi = NEAR_LOW, .rax = val };
	allowed("drop: stosq", &s, NEAR_LOW, val);

	reset_table();
	s = (struct step){ .rip = GADDR(g_rep_stos), .rdi = RANGE_A + 0x30, .rcx = 2, .rax = val };
	run_step(&s);
	r = read_log();
	check(s.port == PORT_DONE && table_intact() && s.out.rcx == 0 && r->n == 2 &&
	      rec_is(&r->recs[0], RANGE_A + 0x30, GADDR(g_rep_stos), 8, &val,
		     INTROVISOR_TRAP_ACTION_DROP, INTROVISOR_TRAP_SRC_EMULATED) &&
	      rec_is(&r->recs[1], RANGE_A + 0x38, GADDR(g_rep_stos), 8, &val,
		     INTROVISOR_TRAP_ACTION_DROP, INTROVISOR_TRAP_SRC_EMULATED),
	      "drop: rep stosq x2: both stores refused, two records");

	s = (struct step){ .rip = GADDR(g_sgdt), .rdi = RANGE_A };
	refused("drop: sgdt (emulator write_std)", &s, RANGE_A, 10, NULL,
		INTROVISOR_TRAP_ACTION_DROP, INTROVISOR_TRAP_SRC_WRITE_STD, GADDR(g_sgdt));

	/* --- #GP ------------------------------------------------------------ */
	s = (struct step){ .rip = GADDR(g_store), .rdi = RANGE_B, .rax = val };
	refused("gp: mov store", &s, RANGE_B, 8, &val, INTROVISOR_TRAP_ACTION_GP,
		INTROVISOR_TRAP_SRC_EMULATED, GADDR(g_store));
	s = (struct step){ .rip = GADDR(g_cmpxchg), .rdi = RANGE_B + 8,
			   .rax = table_init(0x29), .rbx = val2 };
	refused("gp: lock cmpxchg", &s, RANGE_B + 8, 8, &val2, INTROVISOR_TRAP_ACTION_GP,
		INTROVISOR_TRAP_SRC_CMPXCHG, GADDR(g_cmpxchg));
	s = (struct step){ .rip = GADDR(g_stos), .rdi = RANGE_B + 16, .rax = val };
	refused("gp: stosq", &s, RANGE_B + 16, 8, &val, INTROVISOR_TRAP_ACTION_GP,
		INTROVISOR_TRAP_SRC_EMULATED, GADDR(g_stos));
	check(s.out.rdi == RANGE_B + 16, "gp: stosq: RDI not advanced");
	s = (struct step){ .rip = GADDR(g_store), .rdi = NEAR_HIGH, .rax = val };
	allowed("gp: mov store", &s, NEAR_HIGH, val);

	/* --- an instruction the emulator cannot run ------------------------- */
	s = (struct step){ .rip = GADDR(g_maskmovq), .rdi = RANGE_A, .rax = val };
	refused("unemulatable maskmovq", &s, RANGE_A, 0, NULL, INTROVISOR_TRAP_ACTION_GP,
		INTROVISOR_TRAP_SRC_UNEMULATED, GADDR(g_maskmovq_insn));

	/* --- protection survives re-creating the memslot -------------------- */
	set_memslot(1, TABLE, 0, high);
	set_memslot(1, TABLE, HIGH_SIZE, high);
	s = (struct step){ .rip = GADDR(g_store), .rdi = RANGE_A, .rax = val };
	refused("after memslot re-creation: mov store", &s, RANGE_A, 8, &val,
		INTROVISOR_TRAP_ACTION_DROP, INTROVISOR_TRAP_SRC_EMULATED, GADDR(g_store));

	/* --- cost, and the ring overflowing --------------------------------- */
	{
		struct { const char *name; uint64_t target; } m[] = {
			{ "refused write (drop)", RANGE_A },
			{ "allowed write, same page", NEAR_LOW },
			{ "write to an unprotected page", PLAIN },
		};
		double per_exit[3], ns[3][REPS];
		unsigned int refused_total = 0;
		int k;

		/* Interleaved repetitions; report the median and the minimum. */
		for (k = 0; k < REPS; k++) {
			for (i = 0; i < 3; i++) {
				reset_table();
				s = (struct step){ .rip = GADDR(g_loop), .rdi = m[i].target,
						   .rcx = loops, .rax = val };
				run_step(&s);
				per_exit[i] = (double)s.exits / loops;
				ns[i][k] = (double)s.ns / loops;
				if (i == 0)
					refused_total += loops;
			}
		}
		for (i = 0; i < 3; i++) {
			qsort(ns[i], REPS, sizeof(double), cmp_double);
			printf("TRAP measure %s %s: %u writes x %d, %.2f exits/write, %.0f ns/write median, %.0f min\n",
			       mode, m[i].name, loops, REPS, per_exit[i], ns[i][REPS / 2], ns[i][0]);
		}
		check(per_exit[0] <= 1.05 && per_exit[1] <= 1.05,
		      "one exit per write to a protected page (no retry): %.2f, %.2f",
		      per_exit[0], per_exit[1]);
		check(table_intact(), "loop: protected bytes unchanged");
		r = sv(OP_STATS, 0, 0, 0);
		check(r->ret == 0 && r->stats.queued == r->stats.ring_records &&
		      r->stats.lost == refused_total - r->stats.ring_records,
		      "ring full: %llu records queued, %llu lost counted",
		      (unsigned long long)r->stats.queued, (unsigned long long)r->stats.lost);
		while ((r = read_log())->n > 0)
			;
		s = (struct step){ .rip = GADDR(g_store), .rdi = RANGE_A, .rax = val };
		run_step(&s);
		r = read_log();
		check(r->n == 1 && r->recs[0].lost_before == refused_total - 256,
		      "next record reports the records lost before it (%u)",
		      r->n ? r->recs[0].lost_before : 0);
	}

	/* --- remove a range; close the trap fd ------------------------------ */
	r = sv(OP_DEL, RANGE_B, RANGE_LEN, 0);
	check(r->ret == 0, "delete range B");
	reset_table();
	s = (struct step){ .rip = GADDR(g_store), .rdi = RANGE_B, .rax = val };
	run_step(&s);
	check(s.port == PORT_DONE && rd64(RANGE_B) == val && read_log()->n == 0,
	      "after delete: write to range B lands");

	r = sv(OP_CLOSE, 0, 0, 0);
	check(r->ret == 0, "supervisor closes the trap fd");
	reset_table();
	s = (struct step){ .rip = GADDR(g_store), .rdi = RANGE_A, .rax = val };
	run_step(&s);
	check(s.port == PORT_DONE && rd64(RANGE_A) == val,
	      "after close: write to range A lands");

	sv(OP_QUIT, 0, 0, 0);
	waitpid(child, NULL, 0);
	printf("TRAP summary %s: %d checks, %d failed\n", mode, checks, failures);
	printf("TRAP done\n");
	return failures ? 1 : 0;
}
