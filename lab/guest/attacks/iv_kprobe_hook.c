// SPDX-License-Identifier: GPL-2.0
/*
 * Lab attack: a kprobe on the kill path with its handler in this module, the
 * "magic signal" back door of public rootkits: the handler watches every
 * kill(2) for signal `magic` and remembers who sent it (a real rootkit would
 * grant root or unhide a task there). ret=1 registers a kretprobe instead
 * (its handlers live in the struct kretprobe, the kprobe's pre_handler being
 * the kernel's). rmmod removes it.
 *
 *   insmod iv_kprobe_hook.ko [symbol=__x64_sys_kill] [magic=64] [ret=1]
 */
#include <linux/module.h>
#include <linux/kernel.h>
#include <linux/kprobes.h>
#include <linux/sched.h>

static char *symbol = "__x64_sys_kill";
module_param(symbol, charp, 0444);
MODULE_PARM_DESC(symbol, "the function to probe (a pt_regs syscall wrapper)");
static int magic = 64;
module_param(magic, int, 0444);
MODULE_PARM_DESC(magic, "the signal number the back door answers");
static bool ret;
module_param(ret, bool, 0444);
MODULE_PARM_DESC(ret, "register a kretprobe instead of a kprobe");
static int last_sender;
module_param(last_sender, int, 0444);
MODULE_PARM_DESC(last_sender, "pid of the last task that sent the magic signal");

static void iv_watch(struct pt_regs *regs)
{
	/* regs->di holds the syscall's own pt_regs; its si is kill's signal argument. */
	const struct pt_regs *user = (const struct pt_regs *)regs->di;

	if (user && (int)user->si == magic)
		WRITE_ONCE(last_sender, task_pid_nr(current));
}

static int iv_pre(struct kprobe *p, struct pt_regs *regs)
{
	iv_watch(regs);
	return 0;
}

static int iv_entry(struct kretprobe_instance *ri, struct pt_regs *regs)
{
	iv_watch(regs);
	return 0;
}

static int iv_return(struct kretprobe_instance *ri, struct pt_regs *regs)
{
	return 0;
}

static struct kprobe kp = { .pre_handler = iv_pre };
static struct kretprobe krp = { .handler = iv_return, .entry_handler = iv_entry, .maxactive = 16 };

static int __init iv_init(void)
{
	int err;

	if (ret) {
		krp.kp.symbol_name = symbol;
		err = register_kretprobe(&krp);
	} else {
		kp.symbol_name = symbol;
		err = register_kprobe(&kp);
	}
	if (err) {
		pr_err("iv_kprobe_hook: registering a %s on %s: %d\n", ret ? "kretprobe" : "kprobe", symbol, err);
		return err;
	}
	pr_info("iv_kprobe_hook: %s on %s\n", ret ? "kretprobe" : "kprobe", symbol);
	return 0;
}

static void __exit iv_exit(void)
{
	if (ret)
		unregister_kretprobe(&krp);
	else
		unregister_kprobe(&kp);
	pr_info("iv_kprobe_hook: removed\n");
}

module_init(iv_init);
module_exit(iv_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("introvisor lab: kprobe hook on kill");
