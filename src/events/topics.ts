// The MQTT topic tree (docs/MQTT.md). Everything a device publishes is under
// introvisor/<device-id>/; group policy updates come from introvisor/group/<group>/.
import type { EventKind } from './types.js';

const segment = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

/** Throws unless s can be one topic level (no '/', '+', '#', no leading dot or dash). */
export function checkTopicSegment(s: string, what: string): string {
  if (!segment.test(s)) throw new Error(`${what} "${s}" cannot be an MQTT topic level: use 1-64 of [A-Za-z0-9._-], starting with a letter or digit`);
  return s;
}

export interface Topics {
  readonly state: string;
  readonly policySet: string;
  readonly policyState: string;
  /** Whether the device's event store takes writes (retained). */
  readonly storeState: string;
  groupPolicySet(group: string): string;
  guestHealth(guest: string): string;
  event(kind: EventKind): string;
  /** Where an event of this kind (and guest) is published, and whether retained. */
  forEvent(kind: EventKind, guest: string | null): { topic: string; retain: boolean };
}

export function topicsFor(deviceId: string): Topics {
  const base = `introvisor/${checkTopicSegment(deviceId, 'device id')}`;
  const t: Topics = {
    state: `${base}/state`,
    policySet: `${base}/policy/set`,
    policyState: `${base}/policy/state`,
    storeState: `${base}/store/state`,
    groupPolicySet: (group) => `introvisor/group/${checkTopicSegment(group, 'group')}/policy/set`,
    guestHealth: (guest) => `${base}/guest/${checkTopicSegment(guest, 'guest name')}/health`,
    event: (kind) => `${base}/events/${kind}`,
    forEvent(kind, guest) {
      // Health is a state (latest wins, retained per guest); everything else is an event stream.
      if (kind === 'guest-health' && guest !== null) return { topic: t.guestHealth(guest), retain: true };
      return { topic: t.event(kind), retain: false };
    },
  };
  return t;
}
