// The escape hatch of a guest's definition: extra QEMU arguments, checked against what
// introvisor sets itself so that they add devices and options but never replace the
// machine, RAM backend, sockets, pid file, boot or console introvisor relies on.

/**
 * Options introvisor sets itself (machine, RAM backend, sockets, pid file, boot, console, disks it
 * manages): given again they would break introspection, recovery or adoption.
 */
const RESERVED_QEMU_OPTIONS = new Set([
  'name', 'qmp', 'qmp-pretty', 'monitor', 'mon', 'pidfile', 'daemonize', 'runas', 'chroot', 'accel', 'enable-kvm', 'machine', 'M',
  'm', 'mem-path', 'mem-prealloc', 'smp', 'cpu', 'kernel', 'initrd', 'append', 'bios', 'pflash', 'serial', 'nodefaults',
  'no-user-config', 'readconfig', 'writeconfig', 'incoming', 'loadvm', 'snapshot', 'S', 'no-reboot', 'no-shutdown',
  'display', 'nographic', 'sandbox', 'preconfig',
]);
/** Options whose value names an id; ids introvisor uses are refused. */
const ID_OPTIONS = new Set(['chardev', 'object', 'device', 'drive', 'blockdev', 'netdev', 'nic']);
const RESERVED_IDS = /^(ram0|qga0|introvisor-.*|iv-.*)$/;

/** Errors (prefixed "<index> ") for the extra QEMU arguments; empty when they may be used. */
export function extraQemuArgErrors(args: readonly string[]): string[] {
  const errors: string[] = [];
  args.forEach((a, j) => {
    if (!a.startsWith('-')) {
      if (j === 0) errors.push(`0 "${a}" is not an option (extra arguments start with one)`);
      return;
    }
    const opt = a.replace(/^--?/, '');
    if (RESERVED_QEMU_OPTIONS.has(opt)) {
      errors.push(`${j} "${a}" is set by introvisor and cannot be given again`);
      return;
    }
    if (ID_OPTIONS.has(opt)) {
      const value = args[j + 1];
      if (value === undefined || value.startsWith('-')) {
        errors.push(`${j} "${a}" needs a value`);
        return;
      }
      const id = /(?:^|,)id=([^,]*)/.exec(value)?.[1];
      if (id !== undefined && RESERVED_IDS.test(id)) errors.push(`${j + 1} id "${id}" is one introvisor uses`);
      if (opt === 'device' && /(?:^|,)chardev=qga0(?:,|$)/.test(value)) errors.push(`${j + 1} uses introvisor's agent channel qga0`);
      if (/(?:^|,)if=pflash(?:,|$)/.test(value)) errors.push(`${j + 1} is a firmware flash drive, which introvisor sets from /image/firmware`);
      if (/(?:^|,)name=org\.qemu\.guest_agent\.0(?:,|$)/.test(value)) errors.push(`${j + 1} defines a second guest agent port`);
    }
  });
  return errors;
}
