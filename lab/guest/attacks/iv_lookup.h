/* Shared by the lab attack modules: kallsyms_lookup_name is not exported
 * since 5.7, so rootkits take its address from a kprobe; we do the same. */
#ifndef IV_LOOKUP_H
#define IV_LOOKUP_H
#include <linux/kprobes.h>

static unsigned long iv_lookup_name(const char *name)
{
	typedef unsigned long (*lookup_fn)(const char *);
	struct kprobe kp = { .symbol_name = "kallsyms_lookup_name" };
	lookup_fn fn;

	if (register_kprobe(&kp) < 0)
		return 0;
	fn = (lookup_fn)kp.addr;
	unregister_kprobe(&kp);
	return fn ? fn(name) : 0;
}
#endif
