/*
 * bpfload: loads one hand-assembled eBPF program into the lab guest and keeps it attached
 * until killed (closing the descriptors unloads it). The guest has no bpftool or clang, so the
 * instructions are written out here and loaded through the raw bpf() and perf_event_open()
 * system calls.
 *
 *   bpfload trace FUNC      a kprobe program that only reads (pid/tgid, time) and returns 0
 *   bpfload writeuser FUNC  a kprobe program calling bpf_probe_write_user (to address 0: the
 *                           write faults, so the guest is not harmed, but the helper is there)
 *   bpfload override FUNC   a kprobe program calling bpf_override_return(-EPERM); needs a kernel
 *                           with CONFIG_BPF_KPROBE_OVERRIDE and FUNC on its error-injection list
 *   bpfload fmodret FUNC    a BPF_MODIFY_RETURN tracing program returning -EPERM from FUNC
 *                           (security_* functions are allowed without error injection)
 *   bpfload lsm HOOK        a BPF LSM program returning -EPERM from the LSM hook HOOK
 *   bpfload tptrace SYSTEM/EVENT, bpfload tpwriteuser SYSTEM/EVENT
 *                           trace and writeuser on a trace event (e.g. syscalls/sys_exit_getdents64)
 *                           instead of a kprobe; tracefs is mounted if it is not
 *   bpfload rawtp TRACEPOINT
 *                           a raw tracepoint program that only reads, on the tracepoint by its
 *                           name (e.g. sys_enter): the kernel's __bpf_trace_<name> becomes its probe
 *
 * Prints "id=N" once attached, then sleeps. Exit status 2: the kernel refused the program
 * (the verifier's log follows on stderr).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <linux/perf_event.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/syscall.h>
#include <unistd.h>

#define INSN(c, d, s, o, i) ((struct bpf_insn){ .code = (c), .dst_reg = (d), .src_reg = (s), .off = (o), .imm = (i) })
#define MOV64_IMM(d, i) INSN(BPF_ALU64 | BPF_MOV | BPF_K, d, 0, 0, i)
#define MOV64_REG(d, s) INSN(BPF_ALU64 | BPF_MOV | BPF_X, d, s, 0, 0)
#define ADD64_IMM(d, i) INSN(BPF_ALU64 | BPF_ADD | BPF_K, d, 0, 0, i)
#define ST_DW(d, o, i) INSN(BPF_ST | BPF_MEM | BPF_DW, d, 0, o, i)
#define CALL(f) INSN(BPF_JMP | BPF_CALL, 0, 0, 0, f)
#define EXIT() INSN(BPF_JMP | BPF_EXIT, 0, 0, 0, 0)

static char vlog[1 << 16];

static long sys_bpf(int cmd, union bpf_attr *attr) { return syscall(__NR_bpf, cmd, attr, sizeof(*attr)); }

static void die(const char *what) { perror(what); exit(1); }

static int load(const char *name, __u32 type, __u32 attach, __u32 btf_id, const struct bpf_insn *insns, __u32 n) {
	union bpf_attr a;
	memset(&a, 0, sizeof(a));
	a.prog_type = type;
	a.expected_attach_type = attach;
	a.attach_btf_id = btf_id;
	a.insns = (__u64)(uintptr_t)insns;
	a.insn_cnt = n;
	a.license = (__u64)(uintptr_t)"GPL";
	a.log_buf = (__u64)(uintptr_t)vlog;
	a.log_size = sizeof(vlog);
	a.log_level = 1;
	strncpy(a.prog_name, name, sizeof(a.prog_name) - 1);
	int fd = (int)sys_bpf(BPF_PROG_LOAD, &a);
	if (fd < 0) {
		fprintf(stderr, "bpfload: BPF_PROG_LOAD %s: %s\n%s\n", name, strerror(errno), vlog);
		exit(2);
	}
	return fd;
}

static __u32 prog_id(int fd) {
	struct bpf_prog_info info;
	union bpf_attr a;
	memset(&info, 0, sizeof(info));
	memset(&a, 0, sizeof(a));
	a.info.bpf_fd = fd;
	a.info.info_len = sizeof(info);
	a.info.info = (__u64)(uintptr_t)&info;
	if (sys_bpf(BPF_OBJ_GET_INFO_BY_FD, &a) < 0) die("BPF_OBJ_GET_INFO_BY_FD");
	return info.id;
}

/* Attaches a kprobe program to FUNC through the kprobe PMU (no tracefs needed). */
static void attach_kprobe(int prog, const char *func) {
	FILE *f = fopen("/sys/bus/event_source/devices/kprobe/type", "r");
	int type;
	if (!f || fscanf(f, "%d", &type) != 1) die("/sys/bus/event_source/devices/kprobe/type");
	fclose(f);
	struct perf_event_attr pa;
	memset(&pa, 0, sizeof(pa));
	pa.type = (__u32)type;
	pa.size = sizeof(pa);
	pa.config1 = (__u64)(uintptr_t)func; /* kprobe_func */
	pa.config2 = 0;                      /* probe_offset */
	pa.sample_period = 1;
	pa.wakeup_events = 1;
	int pfd = (int)syscall(__NR_perf_event_open, &pa, -1, 0, -1, PERF_FLAG_FD_CLOEXEC);
	if (pfd < 0) die("perf_event_open(kprobe)");
	if (ioctl(pfd, PERF_EVENT_IOC_SET_BPF, prog) < 0) {
		perror("PERF_EVENT_IOC_SET_BPF");
		exit(2);
	}
	if (ioctl(pfd, PERF_EVENT_IOC_ENABLE, 0) < 0) die("PERF_EVENT_IOC_ENABLE");
}

/* Attaches a tracepoint-type program to the trace event SYSTEM/EVENT through a perf event. */
static void attach_trace_event(int prog, const char *event) {
	char path[512];
	FILE *f = NULL;
	static const char *roots[] = { "/sys/kernel/tracing", "/sys/kernel/debug/tracing" };
	for (int pass = 0; pass < 2 && !f; pass++) {
		for (unsigned i = 0; i < 2 && !f; i++) {
			snprintf(path, sizeof(path), "%s/events/%s/id", roots[i], event);
			f = fopen(path, "r");
		}
		if (!f && pass == 0) mount("nodev", "/sys/kernel/tracing", "tracefs", 0, NULL);
	}
	int id;
	if (!f || fscanf(f, "%d", &id) != 1) die(event);
	fclose(f);
	struct perf_event_attr pa;
	memset(&pa, 0, sizeof(pa));
	pa.type = PERF_TYPE_TRACEPOINT;
	pa.size = sizeof(pa);
	pa.config = (__u64)id;
	pa.sample_period = 1;
	pa.wakeup_events = 1;
	int pfd = (int)syscall(__NR_perf_event_open, &pa, -1, 0, -1, PERF_FLAG_FD_CLOEXEC);
	if (pfd < 0) die("perf_event_open(tracepoint)");
	if (ioctl(pfd, PERF_EVENT_IOC_SET_BPF, prog) < 0) {
		perror("PERF_EVENT_IOC_SET_BPF");
		exit(2);
	}
	if (ioctl(pfd, PERF_EVENT_IOC_ENABLE, 0) < 0) die("PERF_EVENT_IOC_ENABLE");
}

/* Tracing and LSM programs attach through BPF_RAW_TRACEPOINT_OPEN with no name, raw tracepoint ones by the tracepoint's. */
static void attach_tracing(int prog, const char *tracepoint) {
	union bpf_attr a;
	memset(&a, 0, sizeof(a));
	a.raw_tracepoint.prog_fd = (__u32)prog;
	a.raw_tracepoint.name = (__u64)(uintptr_t)tracepoint;
	if (sys_bpf(BPF_RAW_TRACEPOINT_OPEN, &a) < 0) {
		perror("BPF_RAW_TRACEPOINT_OPEN");
		exit(2);
	}
}

/* The vmlinux BTF id of the function NAME (kind FUNC), from /sys/kernel/btf/vmlinux. */
static __u32 btf_func_id(const char *name) {
	int fd = open("/sys/kernel/btf/vmlinux", O_RDONLY);
	if (fd < 0) die("/sys/kernel/btf/vmlinux");
	size_t cap = 1 << 20, len = 0;
	unsigned char *b = malloc(cap);
	for (;;) {
		if (!b) die("malloc");
		ssize_t r = read(fd, b + len, cap - len);
		if (r < 0) die("read btf");
		if (r == 0) break;
		len += (size_t)r;
		if (len == cap) b = realloc(b, cap *= 2);
	}
	close(fd);
	__u32 hdr, toff, tlen, soff, slen;
	if (len < 24 || *(__u16 *)b != 0xeb9f) { fprintf(stderr, "bpfload: not BTF\n"); exit(1); }
	memcpy(&hdr, b + 4, 4); memcpy(&toff, b + 8, 4); memcpy(&tlen, b + 12, 4);
	memcpy(&soff, b + 16, 4); memcpy(&slen, b + 20, 4);
	const unsigned char *t = b + hdr + toff, *s = b + hdr + soff;
	__u32 off = 0, id = 1;
	while (off + 12 <= tlen) {
		__u32 name_off, info;
		memcpy(&name_off, t + off, 4);
		memcpy(&info, t + off + 4, 4);
		__u32 kind = (info >> 24) & 0x1f, vlen = info & 0xffff;
		if (kind == 12 && name_off < slen && strcmp((const char *)s + name_off, name) == 0) { free(b); return id; }
		__u32 extra;
		switch (kind) {
		case 1: case 14: case 17: extra = 4; break;      /* INT, VAR, DECL_TAG */
		case 3: extra = 12; break;                       /* ARRAY */
		case 4: case 5: case 15: extra = 12 * vlen; break; /* STRUCT, UNION, DATASEC */
		case 6: case 13: extra = 8 * vlen; break;        /* ENUM, FUNC_PROTO */
		case 19: extra = 12 * vlen; break;               /* ENUM64 */
		default: extra = 0;
		}
		off += 12 + extra;
		id++;
	}
	fprintf(stderr, "bpfload: no BTF function %s\n", name);
	exit(1);
}

int main(int argc, char **argv) {
	if (argc != 3) {
		fprintf(stderr, "usage: bpfload trace|writeuser|override|fmodret|lsm FUNC | tptrace|tpwriteuser SYSTEM/EVENT | rawtp TRACEPOINT\n");
		return 1;
	}
	const char *mode = argv[1], *target = argv[2];
	/* tptrace / tpwriteuser: the same programs on a trace event. */
	int tp = strncmp(mode, "tp", 2) == 0;
	if (tp) mode += 2;
	__u32 type = tp ? BPF_PROG_TYPE_TRACEPOINT : BPF_PROG_TYPE_KPROBE;
	int prog;
	if (strcmp(mode, "trace") == 0) {
		static const struct bpf_insn p[] = {
			CALL(BPF_FUNC_get_current_pid_tgid),
			CALL(BPF_FUNC_ktime_get_ns),
			MOV64_IMM(BPF_REG_0, 0),
			EXIT(),
		};
		prog = load("iv_trace", type, 0, 0, p, sizeof(p) / sizeof(p[0]));
		if (tp) attach_trace_event(prog, target); else attach_kprobe(prog, target);
	} else if (strcmp(mode, "writeuser") == 0) {
		static const struct bpf_insn p[] = {
			ST_DW(BPF_REG_10, -8, 0),
			MOV64_IMM(BPF_REG_1, 0), /* dst: user address 0, the write faults */
			MOV64_REG(BPF_REG_2, BPF_REG_10),
			ADD64_IMM(BPF_REG_2, -8),
			MOV64_IMM(BPF_REG_3, 8),
			CALL(BPF_FUNC_probe_write_user),
			MOV64_IMM(BPF_REG_0, 0),
			EXIT(),
		};
		prog = load("iv_writeuser", type, 0, 0, p, sizeof(p) / sizeof(p[0]));
		if (tp) attach_trace_event(prog, target); else attach_kprobe(prog, target);
	} else if (strcmp(mode, "override") == 0 && !tp) {
		static const struct bpf_insn p[] = {
			MOV64_IMM(BPF_REG_2, -EPERM), /* r1 is the pt_regs context */
			CALL(BPF_FUNC_override_return),
			MOV64_IMM(BPF_REG_0, 0),
			EXIT(),
		};
		prog = load("iv_override", BPF_PROG_TYPE_KPROBE, 0, 0, p, sizeof(p) / sizeof(p[0]));
		attach_kprobe(prog, target);
	} else if (!tp && (strcmp(mode, "fmodret") == 0 || strcmp(mode, "lsm") == 0)) {
		static const struct bpf_insn p[] = {
			MOV64_IMM(BPF_REG_0, -EPERM),
			EXIT(),
		};
		int lsm = mode[0] == 'l';
		char fn[256];
		snprintf(fn, sizeof(fn), lsm ? "bpf_lsm_%s" : "%s", target);
		prog = load(lsm ? "iv_lsm" : "iv_fmodret", lsm ? BPF_PROG_TYPE_LSM : BPF_PROG_TYPE_TRACING,
			lsm ? BPF_LSM_MAC : BPF_MODIFY_RETURN, btf_func_id(fn), p, sizeof(p) / sizeof(p[0]));
		attach_tracing(prog, NULL);
	} else if (!tp && strcmp(mode, "rawtp") == 0) {
		static const struct bpf_insn p[] = {
			CALL(BPF_FUNC_get_current_pid_tgid),
			CALL(BPF_FUNC_ktime_get_ns),
			MOV64_IMM(BPF_REG_0, 0),
			EXIT(),
		};
		prog = load("iv_rawtp", BPF_PROG_TYPE_RAW_TRACEPOINT, 0, 0, p, sizeof(p) / sizeof(p[0]));
		attach_tracing(prog, target);
	} else {
		fprintf(stderr, "bpfload: unknown mode %s\n", mode);
		return 1;
	}
	printf("id=%u\n", prog_id(prog));
	fflush(stdout);
	for (;;) pause();
}
