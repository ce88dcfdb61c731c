// Labels inside ftrace's own caller (arch/x86/kernel/ftrace_64.S) whose call or jmp ftrace itself
// repoints at run time: to the ops list function or a single ops' function, to the graph caller.
// Shared by the text-diff view (these are no fentry sites) and its judge.
export const FTRACE_SELF: ReadonlySet<string> = new Set(['ftrace_call', 'ftrace_regs_call', 'ftrace_graph_call']);
