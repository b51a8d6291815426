import { eventConfigFields, kitConfigSchema } from "@meshmart/kit";
import { z } from "zod";

/** Notifications' settings: the kit's plus its database and the event layer. */
export const notificationsConfigSchema = kitConfigSchema.extend({
  ...eventConfigFields,
  DATABASE_URL: z.string().regex(/^postgres(ql)?:\/\//, "must be a postgres:// URL"),
  /** openServiceData connects Redis for every service; notifications keeps nothing in it. */
  REDIS_URL: z.string().regex(/^rediss?:\/\//, "must be a redis:// URL"),
});

/** Parsed notifications settings. */
export type NotificationsConfig = z.infer<typeof notificationsConfigSchema>;
