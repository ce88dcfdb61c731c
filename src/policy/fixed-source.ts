// A policy source that never changes: the policy file (or the built-in
// defaults) of a supervisor without a policy store. The watchdog reads every
// policy through a PolicySource, this one or the store's.
import type { ActivePolicy, PolicyListener, PolicySource } from '../events/sink.js';

export function fixedPolicySource<P>(policy: P, version: number, source: string, appliedAtMs = Date.now()): PolicySource<P> {
  const active: ActivePolicy<P> = { version, policy, appliedAtMs, source };
  return {
    current: () => active,
    // Nothing ever changes, so a listener is never called.
    subscribe: (_listener: PolicyListener<P>) => () => undefined,
  };
}
