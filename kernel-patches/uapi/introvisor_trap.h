/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * Introvisor write trap: userspace interface.
 *
 * A privileged process (CAP_SYS_ADMIN) that holds a file descriptor for a
 * KVM VM (its own, or one duplicated from the VMM with pidfd_getfd(2))
 * issues INTROVISOR_TRAP_ATTACH on /dev/kvm and gets back a trap file
 * descriptor for that VM.  On the trap fd:
 *
 *   ioctl(INTROVISOR_TRAP_ADD_RANGE)  protect a guest-physical range
 *   ioctl(INTROVISOR_TRAP_DEL_RANGE)  stop protecting it
 *   ioctl(INTROVISOR_TRAP_LIST)       list protected ranges
 *   ioctl(INTROVISOR_TRAP_GET_STATS)  counters
 *   read()                            whole struct introvisor_trap_record
 *   poll()                            POLLIN while records are queued
 *
 * Closing the trap fd removes every range.  Only this header is needed by
 * userspace; every structure has explicit widths and no pointers, except
 * introvisor_trap_list.ranges, a user address passed as a __u64.
 */
#ifndef _UAPI_LINUX_INTROVISOR_TRAP_H
#define _UAPI_LINUX_INTROVISOR_TRAP_H

#include <linux/ioctl.h>
#include <linux/types.h>

#define INTROVISOR_TRAP_API_VERSION	1

/* The ioctl type byte is KVMIO, the one used by /dev/kvm. */
#define INTROVISOR_TRAP_IOC_TYPE	0xAE

/* What happens to a write that overlaps a protected range. */
#define INTROVISOR_TRAP_ACTION_DROP	1 /* write discarded, RIP advances */
#define INTROVISOR_TRAP_ACTION_GP	2 /* #GP(0) injected, RIP stays */

/* Which KVM path met the write. */
#define INTROVISOR_TRAP_SRC_EMULATED	1 /* emulated store (MOV, STOS, ...) */
#define INTROVISOR_TRAP_SRC_CMPXCHG	2 /* emulated locked op (CMPXCHG, XCHG) */
#define INTROVISOR_TRAP_SRC_WRITE_STD	3 /* SGDT/SIDT, FXSAVE, task switch, nested VMX */
#define INTROVISOR_TRAP_SRC_UNEMULATED	4 /* the emulator cannot run the insn */

/* introvisor_trap_record.flags */
#define INTROVISOR_TRAP_REC_DATA_TRUNCATED	(1 << 0) /* len > sizeof(data) */
/* insn[] holds the bytes fetched, not one decoded instruction */
#define INTROVISOR_TRAP_REC_INSN_UNDECODED	(1 << 1)

#define INTROVISOR_TRAP_DATA_BYTES	32
#define INTROVISOR_TRAP_INSN_BYTES	16

#define INTROVISOR_TRAP_MAX_RANGES	64
#define INTROVISOR_TRAP_MAX_RANGE_LEN	(16ULL << 20)
#define INTROVISOR_TRAP_DEFAULT_RING	256
#define INTROVISOR_TRAP_MAX_RING	65536

/* Argument of INTROVISOR_TRAP_ATTACH (on /dev/kvm). */
struct introvisor_trap_attach {
	__s32 vm_fd;		/* fd of the VM, anon_inode:kvm-vm */
	__u32 flags;		/* must be 0 */
	__u32 ring_records;	/* log ring size; 0 = INTROVISOR_TRAP_DEFAULT_RING */
	__u32 reserved;		/* must be 0 */
};

/* Argument of INTROVISOR_TRAP_ADD_RANGE / _DEL_RANGE; element of _LIST. */
struct introvisor_trap_range {
	__u64 gpa;		/* first protected byte */
	__u64 len;		/* bytes, 1 .. INTROVISOR_TRAP_MAX_RANGE_LEN */
	__u32 action;		/* INTROVISOR_TRAP_ACTION_*; ignored by _DEL_RANGE */
	__u32 flags;		/* must be 0 */
};

/* Argument of INTROVISOR_TRAP_LIST. */
struct introvisor_trap_list {
	__u32 count;		/* in: room in ranges[]; out: ranges in force */
	__u32 reserved;		/* must be 0 */
	__u64 ranges;		/* user address of struct introvisor_trap_range[count] */
};

/* Argument of INTROVISOR_TRAP_GET_STATS. */
struct introvisor_trap_stats {
	__u64 refused;		/* writes refused since attach */
	__u64 logged;		/* records queued since attach */
	__u64 lost;		/* records lost because the ring was full */
	__u32 queued;		/* records waiting to be read */
	__u32 ring_records;	/* ring size */
	__u32 nranges;		/* ranges in force */
	__u32 api_version;	/* INTROVISOR_TRAP_API_VERSION */
};

/* One refused write, as returned by read(); 112 bytes. */
struct introvisor_trap_record {
	__u64 seq;		/* 1, 2, ... per trap fd; gaps = lost records */
	__u64 time_ns;		/* CLOCK_REALTIME when the write was refused */
	__u64 gpa;		/* guest-physical address of the first byte written */
	__u64 rip;		/* guest RIP of the instruction */
	__u64 range_gpa;	/* start of the protected range that was hit */
	__u32 vcpu_id;
	__u32 len;		/* bytes the write tried to store (0: unknown) */
	__u16 action;		/* INTROVISOR_TRAP_ACTION_* taken */
	__u16 source;		/* INTROVISOR_TRAP_SRC_* */
	__u32 lost_before;	/* records lost just before this one */
	__u8  insn_len;		/* valid bytes in insn[] */
	__u8  data_len;		/* valid bytes in data[] */
	__u8  flags;		/* INTROVISOR_TRAP_REC_* */
	__u8  reserved[5];
	__u8  insn[INTROVISOR_TRAP_INSN_BYTES];	/* instruction bytes */
	__u8  data[INTROVISOR_TRAP_DATA_BYTES];	/* first bytes it tried to write */
};

#define INTROVISOR_TRAP_ATTACH \
	_IOW(INTROVISOR_TRAP_IOC_TYPE, 0xf0, struct introvisor_trap_attach)
#define INTROVISOR_TRAP_ADD_RANGE \
	_IOW(INTROVISOR_TRAP_IOC_TYPE, 0xf1, struct introvisor_trap_range)
#define INTROVISOR_TRAP_DEL_RANGE \
	_IOW(INTROVISOR_TRAP_IOC_TYPE, 0xf2, struct introvisor_trap_range)
#define INTROVISOR_TRAP_LIST \
	_IOWR(INTROVISOR_TRAP_IOC_TYPE, 0xf3, struct introvisor_trap_list)
#define INTROVISOR_TRAP_GET_STATS \
	_IOR(INTROVISOR_TRAP_IOC_TYPE, 0xf4, struct introvisor_trap_stats)

#endif /* _UAPI_LINUX_INTROVISOR_TRAP_H */
