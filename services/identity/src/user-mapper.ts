import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Role, type User, UserSchema } from "@meshmart/kit/gen/meshmart/identity/v1/identity_pb.js";
import type { UserRow } from "./store.js";

/** Role as the API carries it ↔ as tokens and the database carry it ("customer", "admin"). */
const roleNames = new Map<Role, string>([
  [Role.CUSTOMER, "customer"],
  [Role.ADMIN, "admin"],
]);

export function roleName(role: Role): string | undefined {
  return roleNames.get(role);
}

/** The API role for a stored role name; undefined for names the API has no role for. */
export function roleOf(name: string): Role | undefined {
  for (const [role, n] of roleNames) if (n === name) return role;
  return undefined;
}

/** A stored row as the API's User (never the password hash). */
export function toUser(row: UserRow): User {
  return create(UserSchema, {
    id: row.id,
    email: row.email,
    displayName: row.display_name,
    roles: row.roles.map(roleOf).filter((r): r is Role => r !== undefined),
    createTime: timestampFromDate(row.created_at),
    updateTime: timestampFromDate(row.updated_at),
  });
}
