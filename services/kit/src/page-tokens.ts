import { createHash, createHmac, timingSafeEqual } from "node:crypto";
import type { DescField } from "@bufbuild/protobuf";
import { fieldViolation } from "./violations.js";

/**
 * Page tokens a client cannot forge or alter. A token is `<payload>.<mac>`: the payload is
 * base64url JSON of the cursor (the last row of the page) and a digest of the listing it
 * belongs to; the mac is HMAC-SHA256 under the service's page token key over the request
 * field it is for and the payload. Opening checks the mac first, so a cursor a client made
 * up never reaches a query; then the listing, so a token is only good for the filters (and
 * caller) it was issued under.
 */
export interface PageTokens {
  /** The token for the page after `cursor`, in the listing `binding` names. */
  issue(cursor: Readonly<Record<string, string>>, binding: string): string;
  /**
   * The cursor of a token this service issued for `binding`, with each of `keys`; otherwise
   * INVALID_ARGUMENT naming the page token field (rule `page_token.issued` for a forged,
   * altered or garbled token, `page_token.listing` for another listing's).
   */
  open<K extends string>(token: string, binding: string, keys: readonly K[]): Record<K, string>;
}

/** Bytes a page token key must have at least (the HMAC-SHA256 block's worth of entropy). */
export const PAGE_TOKEN_KEY_BYTES = 32;

/**
 * Page tokens for the request field `field` (a listing's `page_token`): a token issued for
 * one listing method is never accepted by another, even under the same key.
 */
export function createPageTokens(key: Buffer, field: DescField): PageTokens {
  if (key.length < PAGE_TOKEN_KEY_BYTES) {
    throw new Error(`a page token key needs at least ${PAGE_TOKEN_KEY_BYTES} bytes`);
  }
  const purpose = `${field.parent.typeName}.${field.name}\n`;
  const mac = (payload: string) =>
    createHmac("sha256", key).update(purpose).update(payload).digest();
  const listing = (binding: string) =>
    createHash("sha256").update(binding).digest("base64url").slice(0, 16);
  const notIssued = () =>
    fieldViolation(
      field,
      "page_token.issued",
      "must be a next_page_token this service issued, unaltered",
    );
  return {
    issue(cursor, binding) {
      const payload = Buffer.from(JSON.stringify({ c: cursor, l: listing(binding) })).toString(
        "base64url",
      );
      return `${payload}.${mac(payload).toString("base64url")}`;
    },
    open<K extends string>(token: string, binding: string, keys: readonly K[]): Record<K, string> {
      const dot = token.indexOf(".");
      if (dot <= 0) throw notIssued();
      const payload = token.slice(0, dot);
      const given = Buffer.from(token.slice(dot + 1), "base64url");
      const expected = mac(payload);
      // Re-encoding catches trailing or non-canonical base64url that decodes to the same bytes.
      if (
        given.length !== expected.length ||
        !timingSafeEqual(given, expected) ||
        given.toString("base64url") !== token.slice(dot + 1)
      ) {
        throw notIssued();
      }
      const parsed = JSON.parse(Buffer.from(payload, "base64url").toString("utf8")) as {
        c: Record<string, unknown>;
        l: string;
      };
      if (parsed.l !== listing(binding)) {
        throw fieldViolation(
          field,
          "page_token.listing",
          "was issued for a different listing; send the other parameters as they were for the first page",
        );
      }
      const cursor = {} as Record<K, string>;
      for (const k of keys) {
        const v = parsed.c[k];
        // Only a change of this service's own token format gets here.
        if (typeof v !== "string") throw notIssued();
        cursor[k] = v;
      }
      return cursor;
    },
  };
}
