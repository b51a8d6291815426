import {
  DiscardPolicy,
  JetStreamApiCodes,
  JetStreamApiError,
  type JetStreamManager,
  RetentionPolicy,
  StorageType,
  type StreamConfig,
  type StreamInfo,
} from "@nats-io/jetstream";
import { nanos } from "@nats-io/transport-node";
import type { EventDomain, EventNames } from "./names.js";

/** How streams are sized; from {@link EventsConfig}. */
export interface StreamSettings {
  /** Copies of each stream (1 on a single server, 3 in a production cluster). */
  replicas: number;
  /** How long a domain stream keeps events. */
  maxAgeMs: number;
  /** JetStream's Nats-Msg-Id dedupe window. */
  duplicateWindowMs: number;
  /** How long dead letters are kept for inspection and replay (default 30 days). */
  deadLetterMaxAgeMs?: number;
  /**
   * Bring an existing stream's limits in line with these settings (default true). The
   * publishing service owns its stream; a consumer ensuring a stream it reads passes
   * false, so two services configured differently never fight over it.
   */
  updateExisting?: boolean;
}

const DEAD_LETTER_MAX_AGE_MS = 30 * 24 * 3_600_000;
// JetStream rejects a stream whose duplicate window exceeds its max age.
const clampWindow = (windowMs: number, maxAgeMs: number) => Math.min(windowMs, maxAgeMs);

/**
 * Creates, or updates to match, one stream per domain (subjects `<ns>.<domain>.>`) and the
 * dead-letter stream (`<ns>.deadletter.>`). File storage and limits retention: events
 * stay for `maxAgeMs` whoever has read them, so a new consumer or a replay can go back.
 * Idempotent, and safe when replicas of several services run it at the same time.
 */
export async function ensureStreams(
  jsm: JetStreamManager,
  names: EventNames,
  domains: readonly EventDomain[],
  settings: StreamSettings,
): Promise<void> {
  const update = settings.updateExisting ?? true;
  for (const domain of new Set(domains)) {
    await ensureStream(
      jsm,
      {
        name: names.stream(domain),
        description: `meshmart ${domain} events (${names.namespace})`,
        subjects: names.streamSubjects(domain),
        maxAgeMs: settings.maxAgeMs,
        duplicateWindowMs: clampWindow(settings.duplicateWindowMs, settings.maxAgeMs),
        replicas: settings.replicas,
      },
      update,
    );
  }
  const deadLetterAge = settings.deadLetterMaxAgeMs ?? DEAD_LETTER_MAX_AGE_MS;
  await ensureStream(
    jsm,
    {
      name: names.deadLetterStream,
      description: `meshmart dead letters (${names.namespace})`,
      subjects: [`${names.namespace}.deadletter.>`],
      maxAgeMs: deadLetterAge,
      duplicateWindowMs: clampWindow(settings.duplicateWindowMs, deadLetterAge),
      replicas: settings.replicas,
    },
    update,
  );
}

interface WantedStream {
  name: string;
  description: string;
  subjects: string[];
  maxAgeMs: number;
  duplicateWindowMs: number;
  replicas: number;
}

async function ensureStream(
  jsm: JetStreamManager,
  wanted: WantedStream,
  update: boolean,
): Promise<void> {
  const limits = {
    description: wanted.description,
    subjects: wanted.subjects,
    max_age: nanos(wanted.maxAgeMs),
    duplicate_window: nanos(wanted.duplicateWindowMs),
    num_replicas: wanted.replicas,
  };
  let info = await streamInfo(jsm, wanted.name);
  if (info === undefined) {
    const config: Partial<StreamConfig> & { name: string } = {
      name: wanted.name,
      ...limits,
      storage: StorageType.File,
      retention: RetentionPolicy.Limits,
      discard: DiscardPolicy.Old,
    };
    try {
      await jsm.streams.add(config);
      return;
    } catch (reason) {
      // Another replica created it between our look and our add: fall through to compare.
      info = await streamInfo(jsm, wanted.name);
      if (info === undefined) throw reason;
    }
  }
  if (!update) return;
  const current = info.config;
  const same =
    current.description === limits.description &&
    sameSet(current.subjects ?? [], limits.subjects) &&
    current.max_age === limits.max_age &&
    current.duplicate_window === limits.duplicate_window &&
    current.num_replicas === limits.num_replicas;
  if (!same) await jsm.streams.update(wanted.name, limits);
}

async function streamInfo(jsm: JetStreamManager, name: string): Promise<StreamInfo | undefined> {
  try {
    return await jsm.streams.info(name);
  } catch (reason) {
    if (reason instanceof JetStreamApiError && reason.code === JetStreamApiCodes.StreamNotFound) {
      return undefined;
    }
    throw reason;
  }
}

function sameSet(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((s) => b.includes(s));
}
