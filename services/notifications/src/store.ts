import type { Sql } from "@meshmart/kit";
import type { TransactionSql } from "postgres";

/** A notification as stored. */
export interface NotificationRow {
  id: string;
  user_id: string;
  kind: number;
  channel: number;
  recipient: string;
  subject: string;
  body: string;
  order_id: string | null;
  source_event_id: string;
  created_at: Date;
  /** created_at as Postgres prints it, to the microsecond: a Date would round it to ms. */
  created_key: string;
}

/** A notification to record. */
export type NewNotification = Omit<NotificationRow, "created_at" | "created_key">;

/** Where a page of ListNotifications starts: after this (created_at, id), newest first. */
export interface NotificationCursor {
  createdKey: string;
  id: string;
}

/** A user's address book entry. */
export interface UserRow {
  user_id: string;
  email: string;
  display_name: string;
}

const columns =
  "id, user_id, kind, channel, recipient, subject, body, order_id, source_event_id, created_at, created_at::text as created_key";

/** Every SQL statement notifications runs. Writes take the event's transaction. */
export interface NotificationStore {
  /** Records a user's address; a later event for the same user replaces it. */
  upsertUser(tx: TransactionSql, user: UserRow): Promise<void>;
  user(tx: TransactionSql, userId: string): Promise<UserRow | undefined>;
  /** Inserts unless (source_event_id, kind) exists; the stored row either way. */
  record(
    tx: TransactionSql,
    notification: NewNotification,
  ): Promise<{ row: NotificationRow; created: boolean }>;
  list(query: {
    userId: string;
    orderId?: string;
    after?: NotificationCursor;
    limit: number;
  }): Promise<NotificationRow[]>;
}

/** The store over notifications' own database. */
export function createNotificationStore(sql: Sql): NotificationStore {
  return {
    async upsertUser(tx, user) {
      await tx`
        insert into users (user_id, email, display_name)
        values (${user.user_id}, ${user.email}, ${user.display_name})
        on conflict (user_id) do update
          set email = excluded.email, display_name = excluded.display_name, updated_at = now()`;
    },

    async user(tx, userId) {
      const [row] = await tx<UserRow[]>`
        select user_id, email, display_name from users where user_id = ${userId}`;
      return row;
    },

    async record(tx, n) {
      const inserted = await tx<NotificationRow[]>`
        insert into notifications (id, user_id, kind, channel, recipient, subject, body, order_id, source_event_id)
        values (${n.id}, ${n.user_id}, ${n.kind}, ${n.channel}, ${n.recipient}, ${n.subject}, ${n.body},
                ${n.order_id}, ${n.source_event_id})
        on conflict (source_event_id, kind) do nothing
        returning ${tx.unsafe(columns)}`;
      if (inserted[0] !== undefined) return { row: inserted[0], created: true };
      const [existing] = await tx<NotificationRow[]>`
        select ${tx.unsafe(columns)} from notifications
        where source_event_id = ${n.source_event_id} and kind = ${n.kind}`;
      if (existing === undefined) throw new Error("notification vanished between insert and read");
      return { row: existing, created: false };
    },

    list({ userId, orderId, after, limit }) {
      const orderFilter = orderId === undefined ? sql`` : sql`and order_id = ${orderId}`;
      const cursor =
        after === undefined
          ? sql``
          : // Typed as text first: a timestamptz parameter goes through a JS Date, which
            // would cut the key to milliseconds and skip rows between the two.
            sql`and (created_at, id) < (${after.createdKey}::text::timestamptz, ${after.id}::uuid)`;
      return sql<NotificationRow[]>`
        select ${sql.unsafe(columns)} from notifications
        where user_id = ${userId} ${orderFilter} ${cursor}
        order by created_at desc, id desc
        limit ${limit}`;
    },
  };
}
