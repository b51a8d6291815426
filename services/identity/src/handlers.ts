import { randomUUID } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import { type Logger, requireCaller, requireRole } from "@meshmart/kit";
import { ViolationsSchema } from "@meshmart/kit/gen/buf/validate/validate_pb.js";
import type { IdentityService } from "@meshmart/kit/gen/meshmart/identity/v1/identity_service_pb.js";
import type { KeyRing } from "./keys.js";
import { hashPassword, verifyPassword } from "./passwords.js";
import type { IdentityStore, UserRow } from "./store.js";
import { clientAddress, type LoginThrottle } from "./throttle.js";
import { hashRefreshToken, newRefreshToken, type TokenIssuer } from "./tokens.js";
import { roleName, toUser } from "./user-mapper.js";

/** What the identity handlers need. */
export interface IdentityDeps {
  store: IdentityStore;
  keys: KeyRing;
  tokens: TokenIssuer;
  throttle: LoginThrottle;
  logger: Logger;
  refreshTtlS: number;
  /**
   * A hash of a random password, verified against when the email is unknown so that a
   * login costs the same whether or not the account exists.
   */
  dummyPasswordHash: string;
}

const ADMIN = "admin";
const BAD_CREDENTIALS = "invalid email or password";

/** The IdentityService. */
export function createIdentityHandlers(deps: IdentityDeps): ServiceImpl<typeof IdentityService> {
  const { store, keys, tokens, throttle, logger } = deps;

  /** A new access token plus the first refresh token of a new session (family). */
  async function issuePair(user: UserRow) {
    const access = await tokens.accessToken(user);
    const refreshToken = newRefreshToken();
    const refreshExpiresAt = new Date(Date.now() + deps.refreshTtlS * 1000);
    await store.insertRefreshToken({
      hash: hashRefreshToken(refreshToken),
      familyId: randomUUID(),
      userId: user.id,
      expiresAt: refreshExpiresAt,
    });
    return { access, refreshToken, refreshExpiresAt };
  }

  function tokenFields(
    access: { token: string; expiresAt: Date },
    refresh: string,
    refreshExpiresAt: Date,
  ) {
    return {
      accessToken: access.token,
      refreshToken: refresh,
      tokenType: "Bearer",
      expiresIn: BigInt(tokens.accessTtlS),
      accessTokenExpireTime: timestampFromDate(access.expiresAt),
      refreshTokenExpireTime: timestampFromDate(refreshExpiresAt),
    };
  }

  return {
    async signUp(req) {
      const email = req.email.toLowerCase();
      if (req.password.toLowerCase() === email) {
        throw passwordViolation("password must not be the email address");
      }
      const row = await store.createUser({
        id: randomUUID(),
        email,
        display_name: req.displayName,
        password_hash: await hashPassword(req.password),
        roles: ["customer"],
      });
      if (row === undefined) {
        throw new ConnectError("an account with this email already exists", Code.AlreadyExists);
      }
      logger.info({ user_id: row.id }, "user signed up");
      return { user: toUser(row) };
    },

    async login(req, ctx) {
      const attempt = { email: req.email, client: clientAddress(ctx.requestHeader) };
      const wait = await throttle.blockedFor(attempt);
      if (wait !== undefined) {
        throw new ConnectError(
          `too many failed logins; retry after ${wait} seconds`,
          Code.ResourceExhausted,
        );
      }
      const user = await store.findUserByEmail(req.email);
      // Unknown email still spends a hash computation: no timing oracle for who exists.
      const ok = await verifyPassword(req.password, user?.password_hash ?? deps.dummyPasswordHash);
      if (user === undefined || !ok) {
        await throttle.recordFailure(attempt);
        throw new ConnectError(BAD_CREDENTIALS, Code.Unauthenticated);
      }
      await throttle.recordSuccess(attempt);
      const { access, refreshToken, refreshExpiresAt } = await issuePair(user);
      return { ...tokenFields(access, refreshToken, refreshExpiresAt), user: toUser(user) };
    },

    async refreshToken(req) {
      const next = newRefreshToken();
      const expiresAt = new Date(Date.now() + deps.refreshTtlS * 1000);
      const outcome = await store.rotateRefreshToken(hashRefreshToken(req.refreshToken), {
        hash: hashRefreshToken(next),
        expiresAt,
      });
      if (outcome.kind === "reused") {
        logger.warn("refresh token reused: session revoked");
        throw new ConnectError("refresh token is no longer valid", Code.Unauthenticated);
      }
      if (outcome.kind === "invalid") {
        throw new ConnectError("refresh token is no longer valid", Code.Unauthenticated);
      }
      const access = await tokens.accessToken(outcome.user);
      return tokenFields(access, next, expiresAt);
    },

    async logout(req) {
      await store.revokeRefreshFamily(hashRefreshToken(req.refreshToken));
      return {};
    },

    async getMe(_req, ctx) {
      const caller = requireCaller(ctx);
      const row = await store.getUser(caller.userId);
      if (row === undefined) throw new ConnectError("account no longer exists", Code.NotFound);
      return { user: toUser(row) };
    },

    async getJwks() {
      return { keys: await keys.jwks() };
    },

    async grantRole(req, ctx) {
      const admin = requireRole(ctx, ADMIN);
      const name = roleName(req.role);
      if (name === undefined) throw new ConnectError("role is not grantable", Code.InvalidArgument);
      const row = await store.addRole(req.userId, name, admin.userId);
      if (row === undefined) throw new ConnectError(`user ${req.userId} not found`, Code.NotFound);
      logger.info({ user_id: row.id, role: name, granted_by: admin.userId }, "role granted");
      return { user: toUser(row) };
    },
  };
}

/** INVALID_ARGUMENT with a buf.validate violation on `password`, like the validator's own. */
function passwordViolation(message: string): ConnectError {
  return new ConnectError(message, Code.InvalidArgument, undefined, [
    {
      desc: ViolationsSchema,
      value: create(ViolationsSchema, {
        violations: [
          {
            field: { elements: [{ fieldName: "password", fieldNumber: 2 }] },
            ruleId: "password.not_email",
            message,
          },
        ],
      }),
    },
  ]);
}
