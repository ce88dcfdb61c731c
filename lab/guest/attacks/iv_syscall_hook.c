// SPDX-License-Identifier: GPL-2.0
/*
 * Lab attack: overwrite chosen sys_call_table entries the way LKM rootkits
 * do (CR0.WP cleared around a direct store). The hook forwards to the
 * original handler. Unloading puts the original entries back.
 *
 *   insmod iv_syscall_hook.ko nrs=39,62
 */
#include <linux/module.h>
#include <linux/kernel.h>
#include <linux/irqflags.h>
#include <linux/ptrace.h>
#include <asm/unistd.h>
#include "iv_lookup.h"

#define IV_MAX_HOOKS 16

typedef long (*syscall_fn)(const struct pt_regs *);

static int nrs[IV_MAX_HOOKS];
static int nr_count;
module_param_array(nrs, int, &nr_count, 0444);
MODULE_PARM_DESC(nrs, "syscall numbers whose sys_call_table entries are replaced");

static syscall_fn *table;
static syscall_fn originals[IV_MAX_HOOKS];

static long iv_hook(const struct pt_regs *regs)
{
	int i;

	for (i = 0; i < nr_count; i++)
		if (nrs[i] == (int)regs->orig_ax)
			return originals[i](regs);
	return -ENOSYS;
}

static inline void iv_write_cr0(unsigned long val)
{
	/* native_write_cr0 pins WP on; rootkits bypass it with a raw move. */
	asm volatile("mov %0,%%cr0" : "+r"(val) : : "memory");
}

static void iv_store(int idx, syscall_fn fn)
{
	unsigned long flags, cr0;

	local_irq_save(flags);
	cr0 = read_cr0();
	iv_write_cr0(cr0 & ~X86_CR0_WP);
	WRITE_ONCE(table[nrs[idx]], fn);
	iv_write_cr0(cr0);
	local_irq_restore(flags);
}

static int __init iv_init(void)
{
	int i;

	table = (syscall_fn *)iv_lookup_name("sys_call_table");
	if (!table) {
		pr_err("iv_syscall_hook: sys_call_table not found\n");
		return -ENOENT;
	}
	for (i = 0; i < nr_count; i++)
		if (nrs[i] < 0 || nrs[i] >= NR_syscalls)
			return -EINVAL;
	for (i = 0; i < nr_count; i++) {
		originals[i] = READ_ONCE(table[nrs[i]]);
		iv_store(i, iv_hook);
		pr_info("iv_syscall_hook: sys_call_table[%d] %ps -> %ps\n",
			nrs[i], originals[i], READ_ONCE(table[nrs[i]]));
	}
	return 0;
}

static void __exit iv_exit(void)
{
	int i;

	for (i = 0; i < nr_count; i++) {
		iv_store(i, originals[i]);
		pr_info("iv_syscall_hook: sys_call_table[%d] restored to %ps\n",
			nrs[i], READ_ONCE(table[nrs[i]]));
	}
}

module_init(iv_init);
module_exit(iv_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("introvisor lab: sys_call_table hook");
