// SPDX-License-Identifier: GPL-2.0-only
/*
 * A tiny KVM VMM for the Node binding test (test/trap/node/): one real-mode
 * vCPU whose only job is a 4-byte store ("mov [di], eax") into a page that
 * stands for sys_call_table, driven over stdin so that another process (the
 * supervisor under test) can attach the write trap to this VM by pid.
 *
 *   vmm            prints "READY pid=<pid> table=0x10000 entries=512"
 *   store <off> <val>  (hex) runs the store at table+off, prints
 *                  "DONE port=<0x10 done | 0x11 #GP> ip=<hex> mem=<hex u32 at target>"
 *   peek <off>     prints "MEM <hex u32>"
 *   quit
 *
 * The vCPU is created at the first store, so a host where KVM can create a VM
 * but not run it still serves the attach test.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#define MEM_SIZE 0x20000
#define CODE 0x1000
#define GP_HANDLER 0x1100
#define TABLE 0x10000
#define ENTRIES 512

static int kvm, vm, vcpu = -1;
static uint8_t *mem;
static struct kvm_run *run;

static void fail(const char *what)
{
	printf("FAIL %s: %s\n", what, strerror(errno));
	fflush(stdout);
	exit(1);
}

static void setup_vcpu(void)
{
	struct kvm_sregs s;
	long sz;

	vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
	if (vcpu < 0)
		fail("KVM_CREATE_VCPU");
	sz = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
	run = mmap(NULL, sz, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
	if (run == MAP_FAILED)
		fail("mmap kvm_run");
	if (ioctl(vcpu, KVM_GET_SREGS, &s))
		fail("KVM_GET_SREGS");
	s.cs.base = 0;
	s.cs.selector = 0;
	/* DS addresses the table page: [di] = TABLE + di. */
	s.ds.base = TABLE;
	s.ds.selector = TABLE >> 4;
	s.ss.base = 0;
	s.ss.selector = 0;
	if (ioctl(vcpu, KVM_SET_SREGS, &s))
		fail("KVM_SET_SREGS");
}

static void store(unsigned off, uint32_t val)
{
	struct kvm_regs r = { 0 };
	int port = -1, i;

	if (vcpu < 0)
		setup_vcpu();
	r.rip = CODE;
	r.rax = val;
	r.rdi = off;
	r.rsp = 0x8000;
	r.rflags = 2;
	if (ioctl(vcpu, KVM_SET_REGS, &r))
		fail("KVM_SET_REGS");
	for (i = 0; i < 10; i++) {
		if (ioctl(vcpu, KVM_RUN, 0) < 0)
			fail("KVM_RUN");
		if (run->exit_reason == KVM_EXIT_IO) {
			port = run->io.port;
			break;
		}
		printf("# exit reason %u\n", run->exit_reason);
	}
	if (ioctl(vcpu, KVM_GET_REGS, &r))
		fail("KVM_GET_REGS");
	uint32_t now;
	memcpy(&now, mem + TABLE + off, 4);
	/* The #GP handler leaves the faulting IP in bx (popped from its frame). */
	printf("DONE port=0x%x ip=0x%llx mem=0x%08x\n", port,
	       (unsigned long long)(port == 0x11 ? r.rbx : r.rip), now);
	fflush(stdout);
}

int main(void)
{
	static const uint8_t code[] = {
		0x66, 0x89, 0x05,	/* mov [di], eax */
		0xe6, 0x10,		/* out 0x10, al */
		0xf4,			/* hlt */
	};
	static const uint8_t gp[] = {
		0x5b,			/* pop bx: faulting IP */
		0xe6, 0x11,		/* out 0x11, al */
		0xf4,			/* hlt */
	};
	struct kvm_userspace_memory_region region = { 0 };
	char line[256];
	int i;

	setvbuf(stdout, NULL, _IOLBF, 0);
	kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (kvm < 0)
		fail("open /dev/kvm");
	vm = ioctl(kvm, KVM_CREATE_VM, 0);
	if (vm < 0)
		fail("KVM_CREATE_VM");
	mem = mmap(NULL, MEM_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED)
		fail("mmap");
	memcpy(mem + CODE, code, sizeof(code));
	memcpy(mem + GP_HANDLER, gp, sizeof(gp));
	/* Real-mode IVT: vector 13 (#GP) -> 0000:GP_HANDLER. */
	mem[13 * 4] = GP_HANDLER & 0xff;
	mem[13 * 4 + 1] = GP_HANDLER >> 8;
	for (i = 0; i < ENTRIES; i++) {
		uint64_t v = 0xffffffff81000000ull + 0x10 * i;

		memcpy(mem + TABLE + 8 * i, &v, 8);
	}
	region.memory_size = MEM_SIZE;
	region.userspace_addr = (uintptr_t)mem;
	if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region))
		fail("KVM_SET_USER_MEMORY_REGION");
	printf("READY pid=%d table=0x%x entries=%d\n", getpid(), TABLE, ENTRIES);

	while (fgets(line, sizeof(line), stdin)) {
		unsigned off;
		unsigned long val;

		if (sscanf(line, "store %x %lx", &off, &val) == 2 && off + 4 <= ENTRIES * 8) {
			store(off, (uint32_t)val);
		} else if (sscanf(line, "peek %x", &off) == 1 && off + 4 <= ENTRIES * 8) {
			uint32_t v;

			memcpy(&v, mem + TABLE + off, 4);
			printf("MEM 0x%08x\n", v);
		} else if (!strncmp(line, "quit", 4)) {
			break;
		} else {
			printf("FAIL bad command\n");
		}
	}
	return 0;
}
