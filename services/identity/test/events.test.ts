import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, test } from "node:test";
import { fromBinary } from "@bufbuild/protobuf";
import {
  UserRoleGrantedSchema,
  UserSignedUpSchema,
} from "@meshmart/kit/gen/meshmart/identity/v1/events_pb.js";
import { Role } from "@meshmart/kit/gen/meshmart/identity/v1/identity_pb.js";
import { createIdentityFixture, type IdentityFixture } from "./support/identity-fixture.js";

// Identity announces accounts and grants through its outbox, in the transaction that makes
// them: notifications learns addresses from UserSignedUp.
let f: IdentityFixture;

before(async () => {
  f = await createIdentityFixture("identity_events");
});
after(() => f?.close());

async function outbox(type: string) {
  return f.sql<{ subject: string; payload: Uint8Array }[]>`
    select subject, payload from event_outbox where event_type = ${type} order by seq`;
}

test("SignUp writes one UserSignedUp; a refused duplicate writes none", async () => {
  const email = `events-${randomUUID()}@example.com`;
  const { user } = await f.client.signUp({
    email,
    password: "correct horse battery staple",
    displayName: "Events",
  });
  await assert.rejects(
    f.client.signUp({ email, password: "correct horse battery staple", displayName: "Again" }),
  );
  const rows = (await outbox(UserSignedUpSchema.typeName))
    .map((r) => ({ subject: r.subject, event: fromBinary(UserSignedUpSchema, r.payload) }))
    .filter((r) => r.event.userId === user?.id);
  assert.equal(rows.length, 1);
  assert.equal(rows[0]?.subject, "meshmart.identity.user.signed_up");
  assert.equal(rows[0]?.event.email, email);
  assert.equal(rows[0]?.event.displayName, "Events");
  // The event never carries the password or its hash.
  const raw = (await outbox(UserSignedUpSchema.typeName)).map((r) =>
    Buffer.from(r.payload).toString("latin1"),
  );
  assert.ok(raw.every((p) => !p.includes("horse") && !p.includes("scrypt")));
});

test("granting a role writes UserRoleGranted once; granting it again writes nothing", async () => {
  const { user } = await f.client.signUp({
    email: `grant-${randomUUID()}@example.com`,
    password: "correct horse battery staple",
    displayName: "Grantee",
  });
  const userId = user?.id ?? "";
  const adminId = randomUUID();
  await f.store.addRole(userId, "admin", adminId);
  await f.store.addRole(userId, "admin", adminId);
  const grants = (await outbox(UserRoleGrantedSchema.typeName))
    .map((r) => fromBinary(UserRoleGrantedSchema, r.payload))
    .filter((e) => e.userId === userId);
  assert.equal(grants.length, 1);
  assert.equal(grants[0]?.role, Role.ADMIN);
  assert.equal(grants[0]?.grantedByUserId, adminId);
});
