import { Code, ConnectError, type HandlerContext } from "@connectrpc/connect";
import { callerKey } from "@meshmart/kit";

/**
 * Who may call payments. Payments is mesh-internal: the Istio AuthorizationPolicy lets
 * only orders (and admin tooling) reach it, over mTLS. Authorize, capture, void and get
 * need no token: orders forwards the customer's token while a request is live, but a saga
 * resumed after a crash has none, and its compensation (void) must still go through.
 * RefundPayment is also for admins, so it checks here: role admin, or the call comes
 * from an allowed service account.
 */
export interface CallerPolicy {
  /** Where the peer's identity comes from; `off` trusts every caller (loopback only). */
  peerIdentity: "xfcc" | "off";
  /** Service accounts allowed to refund without role admin. */
  refundServiceAccounts: readonly string[];
}

const ADMIN = "admin";
const XFCC = "x-forwarded-client-cert";
const SPIFFE_SA = /^spiffe:\/\/[^/]+\/ns\/[^/]+\/sa\/([^/]+)$/;

/** RefundPayment's check: role admin, or an allowed peer service; else the call is refused. */
export function authorizeRefund(
  ctx: Pick<HandlerContext, "values" | "requestHeader">,
  policy: CallerPolicy,
): void {
  const caller = ctx.values.get(callerKey);
  if (caller?.roles.includes(ADMIN)) return;
  if (policy.peerIdentity === "off") return;
  const account = peerServiceAccount(ctx.requestHeader.get(XFCC));
  if (account !== undefined && policy.refundServiceAccounts.includes(account)) return;
  throw caller === undefined
    ? new ConnectError(
        "refunds need role admin or a calling service allowed to refund",
        Code.Unauthenticated,
      )
    : new ConnectError(`role '${ADMIN}' required`, Code.PermissionDenied);
}

/**
 * The Kubernetes service account of the workload that called, from the x-forwarded-client-cert
 * header the Istio sidecar writes from the mTLS peer certificate
 * (`By=…;Hash=…;URI=spiffe://<domain>/ns/<ns>/sa/<account>`). The sidecar appends the direct
 * peer's element last, after anything the caller sent, so only the last element is trusted.
 * Undefined when the header is missing or names no SPIFFE service account.
 */
export function peerServiceAccount(header: string | null): string | undefined {
  if (header === null) return undefined;
  const last = splitUnquoted(header, ",").at(-1);
  if (last === undefined) return undefined;
  for (const pair of splitUnquoted(last, ";")) {
    const eq = pair.indexOf("=");
    if (eq < 0 || pair.slice(0, eq).trim().toLowerCase() !== "uri") continue;
    const match = SPIFFE_SA.exec(unquote(pair.slice(eq + 1).trim()));
    if (match?.[1] !== undefined) return match[1];
  }
  return undefined;
}

// XFCC values containing , ; or = are double-quoted, with \" inside.
function splitUnquoted(text: string, separator: string): string[] {
  const parts: string[] = [];
  let current = "";
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === "\\" && quoted) {
      current += c + (text[i + 1] ?? "");
      i++;
    } else if (c === '"') {
      quoted = !quoted;
      current += c;
    } else if (c === separator && !quoted) {
      parts.push(current);
      current = "";
    } else {
      current += c;
    }
  }
  parts.push(current);
  return parts.map((p) => p.trim()).filter((p) => p !== "");
}

function unquote(value: string): string {
  return value.startsWith('"') && value.endsWith('"') && value.length >= 2
    ? value.slice(1, -1).replace(/\\(.)/g, "$1")
    : value;
}
