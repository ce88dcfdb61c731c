// SPDX-License-Identifier: GPL-2.0
/*
 * Lab attack: a probe on a syscall tracepoint with its code in this module,
 * how rootkits watch every system call without touching the syscall table or
 * kernel text: tracepoint_probe_register on sys_enter (found by name through
 * for_each_kernel_tracepoint, since the tracepoint itself is not exported).
 * The probe counts calls of syscall `nr` and remembers who made the last one
 * (a real rootkit would read or rewrite the arguments there). rmmod
 * unregisters it and waits for running probes to finish.
 *
 *   insmod iv_tracepoint_hook.ko [tracepoint=sys_enter] [nr=62]
 */
#include <linux/module.h>
#include <linux/kernel.h>
#include <linux/tracepoint.h>
#include <linux/sched.h>
#include <linux/string.h>
#include <asm/ptrace.h>

static char *tracepoint = "sys_enter";
module_param(tracepoint, charp, 0444);
MODULE_PARM_DESC(tracepoint, "the tracepoint to probe (sys_enter or sys_exit: the probe takes their arguments)");
static long nr = 62; /* kill */
module_param(nr, long, 0444);
MODULE_PARM_DESC(nr, "the syscall number the probe watches");
static int hits;
module_param(hits, int, 0444);
MODULE_PARM_DESC(hits, "calls of syscall nr the probe saw");
static int last_caller;
module_param(last_caller, int, 0444);
MODULE_PARM_DESC(last_caller, "pid of the last task that made it");

static struct tracepoint *tp;

static void iv_lookup(struct tracepoint *t, void *priv)
{
	if (!tp && strcmp(t->name, tracepoint) == 0)
		tp = t;
}

/* sys_enter and sys_exit both pass (regs, long): the syscall number, or its return value. */
static void iv_probe(void *data, struct pt_regs *regs, long id)
{
	if (regs && (long)regs->orig_ax == nr) {
		WRITE_ONCE(hits, READ_ONCE(hits) + 1);
		WRITE_ONCE(last_caller, task_pid_nr(current));
	}
}

static int __init iv_init(void)
{
	int err;

	for_each_kernel_tracepoint(iv_lookup, NULL);
	if (!tp) {
		pr_err("iv_tracepoint_hook: no tracepoint %s\n", tracepoint);
		return -ENOENT;
	}
	err = tracepoint_probe_register(tp, (void *)iv_probe, NULL);
	if (err) {
		pr_err("iv_tracepoint_hook: registering on %s: %d\n", tracepoint, err);
		return err;
	}
	pr_info("iv_tracepoint_hook: probe on %s watching syscall %ld\n", tracepoint, nr);
	return 0;
}

static void __exit iv_exit(void)
{
	tracepoint_probe_unregister(tp, (void *)iv_probe, NULL);
	tracepoint_synchronize_unregister();
	pr_info("iv_tracepoint_hook: removed\n");
}

module_init(iv_init);
module_exit(iv_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("introvisor lab: tracepoint probe on a syscall tracepoint");
