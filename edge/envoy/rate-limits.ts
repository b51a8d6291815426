/**
 * The edge's rate limits: Envoy's local_ratelimit with one bucket per client — its verified
 * subject when signed in, else its IP — per route, per Envoy replica.
 */
import { any, pct100 } from "./envoy-json.js";

/** The verified `sub` claim, set by jwt_authn for the per-user rate limit. */
export const JWT_SUBJECT_HEADER = "x-jwt-sub";

/** A token bucket: `burst` requests at once, refilled at `perSecond`. */
export interface RateLimit {
  burst: number;
  perSecond: number;
}

/**
 * Per client (its IP when anonymous, its verified `sub` when signed in), per Envoy replica.
 * Credential endpoints get a stricter bucket of their own, so guessing passwords is slow
 * while browsing is not.
 */
export const RATE_LIMITS = {
  default: { burst: 100, perSecond: 50 },
  methods: {
    "meshmart.identity.v1.IdentityService.Login": { burst: 10, perSecond: 1 },
    "meshmart.identity.v1.IdentityService.SignUp": { burst: 10, perSecond: 1 },
    "meshmart.identity.v1.IdentityService.RefreshToken": { burst: 10, perSecond: 2 },
  } as Readonly<Record<string, RateLimit>>,
} as const;

/** The per-client buckets of one route: per verified user when signed in, else per IP. */
export function rateLimitFor(limit: RateLimit, statPrefix: string) {
  const bucket = {
    max_tokens: limit.burst,
    tokens_per_fill: limit.perSecond,
    fill_interval: "1s",
  };
  return any("envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit", {
    stat_prefix: statPrefix,
    // Across every client of this route: only the per-client buckets below should bite.
    token_bucket: { max_tokens: 1_000_000, tokens_per_fill: 1_000_000, fill_interval: "1s" },
    filter_enabled: pct100("local_rate_limit_enabled"),
    filter_enforced: pct100("local_rate_limit_enforced"),
    rate_limited_as_resource_exhausted: true,
    max_dynamic_descriptors: 100_000,
    descriptors: [
      { entries: [{ key: "user" }], token_bucket: bucket },
      {
        entries: [{ key: "anonymous", value: "true" }, { key: "remote_address" }],
        token_bucket: bucket,
      },
    ],
    rate_limits: [
      {
        actions: [
          {
            request_headers: {
              header_name: JWT_SUBJECT_HEADER,
              descriptor_key: "user",
              skip_if_absent: true,
            },
          },
        ],
      },
      {
        actions: [
          {
            header_value_match: {
              descriptor_key: "anonymous",
              descriptor_value: "true",
              expect_match: false,
              headers: [{ name: JWT_SUBJECT_HEADER, present_match: true }],
            },
          },
          { remote_address: {} },
        ],
      },
    ],
    response_headers_to_add: [
      { append_action: "OVERWRITE_IF_EXISTS_OR_ADD", header: { key: "retry-after", value: "1" } },
    ],
  });
}
