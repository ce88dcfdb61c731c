// The kernel functions rootkits hook to hide or to take control: the one list
// every hook detector (ftrace ops, kprobes) consults, documented in
// docs/DETECTION.md. A module's hook on one of these is a finding even when the
// module is on the module list: nothing legitimate loaded as a module needs to
// run its own code in front of directory listing or process listing.

export type HookTargetCategory =
  | 'syscall entry'
  | 'directory listing'
  | 'procfs'
  | 'network listing'
  | 'module listing'
  | 'signals'
  | 'audit'
  | 'credentials'
  | 'kernel symbols'
  | 'tracing';

const RULES: readonly (readonly [RegExp, HookTargetCategory])[] = [
  // Every syscall's entry wrapper and its bodies, and the dispatch itself.
  [/^(__x64_|__ia32_|__x32_|__se_|__do_|__do_compat_|__ia32_compat_|__x64_compat_)?sys_[a-z0-9_]+$/, 'syscall entry'],
  [/^(x64_sys_call|ia32_sys_call|x32_sys_call|do_syscall_64|do_int80_syscall_32|do_fast_syscall_32|entry_SYSCALL_64)$/, 'syscall entry'],
  [/^ksys_/, 'syscall entry'],
  // What getdents runs: hiding files and /proc/<pid> entries.
  [/^(filldir|filldir64|compat_filldir|fillonedir|compat_fillonedir|iterate_dir|vfs_readdir|do_getdents|verify_dirent_name|dcache_readdir)$/, 'directory listing'],
  // /proc: process listing and lookup (ps, top), /proc/<pid>/* and the seq files under it.
  [/^(proc_|pid_revalidate$|next_tgid$|find_ge_pid$|tgid_|proc_pid_|m_show_pid)/, 'procfs'],
  // /proc/net listings and the sock_diag replies netstat/ss read; packet capture paths.
  [/^(tcp[46]_seq_show|udp[46]?_seq_show|udp6_seq_show|raw_seq_show|raw6_seq_show|unix_seq_show|packet_seq_show|inet_sk_diag_fill|inet_diag_dump_one_icsk|inet_diag_|tcp_diag_|udp_diag_|sock_diag_|packet_rcv|tpacket_rcv|packet_rcv_spkt)/, 'network listing'],
  // /proc/modules (m_show, m_start, m_next), module loading, /sys/module.
  [/^(m_show|m_start|m_next|m_stop|modules_open|load_module|do_init_module|free_module|module_kobject_|mod_sysfs_)/, 'module listing'],
  // Signals: the kill(2) back door and protecting hidden tasks from being killed.
  [/^(kill_pid_info|kill_something_info|do_send_sig_info|group_send_sig_info|send_signal|__send_signal|__send_signal_locked|send_signal_locked|do_tkill|do_rt_sigqueueinfo|kill_pid_usb_asyncio)$/, 'signals'],
  [/^(audit_|__audit_)/, 'audit'],
  [/^(commit_creds|prepare_creds|prepare_kernel_cred|override_creds)$/, 'credentials'],
  // /proc/kallsyms (s_show) and kallsyms lookups: hiding a rootkit's own symbols.
  [/^(s_show|s_next|kallsyms_|module_kallsyms_|update_iter)/, 'kernel symbols'],
  // What shows ftrace/kprobe/BPF users: hiding the hook itself.
  [/^(t_show|ftrace_|kprobe_|show_kprobe_addr|bpf_prog_|bpf_map_|trace_)/, 'tracing'],
];

/** The function name without the compiler's suffixes (.isra.0, .constprop.0, .part.0, .cold). */
export function baseSymbol(name: string): string {
  return name.replace(/\+0x[0-9a-f]+$/, '').replace(/\.(isra|constprop|part|cold|llvm)(\.\d+)*$/g, '').replace(/\.(isra|constprop|part|cold|llvm)(\.\d+)*/g, '');
}

/** Why rootkits hook this function (its category), or null when it is not on the list. */
export function hookTargetCategory(symbol: string): HookTargetCategory | null {
  const name = baseSymbol(symbol);
  for (const [re, cat] of RULES) if (re.test(name)) return cat;
  return null;
}

/** The categories, for documentation and evidence. */
export const HOOK_TARGET_CATEGORIES: readonly HookTargetCategory[] = [...new Set(RULES.map((r) => r[1]))];
