import { randomUUID } from "node:crypto";
import type { Logger } from "@meshmart/kit";
import { hashPassword } from "./passwords.js";
import type { IdentityStore } from "./store.js";

/**
 * The first admin, from the environment: an existing user is granted admin; a missing one
 * is created as admin when a password is given too. Logs the user id, never the password.
 */
export async function bootstrapAdmin(
  store: IdentityStore,
  logger: Logger,
  email: string | undefined,
  password: string | undefined,
): Promise<void> {
  if (email === undefined) return;
  const existing = await store.findUserByEmail(email);
  if (existing !== undefined) {
    if (!existing.roles.includes("admin")) {
      await store.addRole(existing.id, "admin", "");
      logger.info({ user_id: existing.id }, "bootstrap admin: role admin granted");
    }
    return;
  }
  if (password === undefined) {
    logger.warn("bootstrap admin email set but no such user and no password: nothing created");
    return;
  }
  const created = await store.createUser({
    id: randomUUID(),
    email: email.toLowerCase(),
    display_name: "Administrator",
    password_hash: await hashPassword(password),
    roles: ["customer", "admin"],
  });
  // Undefined: a replica starting alongside created it first; grant to be sure.
  const user = created ?? (await store.findUserByEmail(email));
  if (created === undefined && user !== undefined) await store.addRole(user.id, "admin", "");
  if (user !== undefined) logger.info({ user_id: user.id }, "bootstrap admin ready");
}
