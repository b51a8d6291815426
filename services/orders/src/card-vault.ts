import { createCipheriv, createDecipheriv, randomBytes } from "node:crypto";
import { fromBinary, toBinary } from "@bufbuild/protobuf";
import { type Card, CardSchema } from "@meshmart/kit/gen/meshmart/common/v1/card_pb.js";

const IV_BYTES = 12;
const TAG_BYTES = 16;

/**
 * Keeps a card between PlaceOrder and the saga's authorization. The card must outlive a
 * crash of orders in that window (a restarted replica authorizes it), so it is stored, but
 * only sealed: AES-256-GCM under SAGA_CARD_KEY with the order id as associated data, so a
 * sealed card copied to another order's saga does not open. The saga drops it as soon as
 * the authorization has an outcome.
 */
export interface CardVault {
  seal(card: Card, orderId: string): Buffer;
  /** Throws when the key is not the one that sealed it or the bytes were altered. */
  open(sealed: Uint8Array, orderId: string): Card;
}

/** A vault under `key` (32 bytes). */
export function createCardVault(key: Buffer): CardVault {
  if (key.length !== 32) throw new Error("the card key must be 32 bytes");
  return {
    seal(card, orderId) {
      const iv = randomBytes(IV_BYTES);
      const cipher = createCipheriv("aes-256-gcm", key, iv);
      cipher.setAAD(Buffer.from(orderId, "utf8"));
      const body = Buffer.concat([cipher.update(toBinary(CardSchema, card)), cipher.final()]);
      return Buffer.concat([iv, cipher.getAuthTag(), body]);
    },
    open(sealed, orderId) {
      const bytes = Buffer.from(sealed);
      const decipher = createDecipheriv("aes-256-gcm", key, bytes.subarray(0, IV_BYTES));
      decipher.setAAD(Buffer.from(orderId, "utf8"));
      decipher.setAuthTag(bytes.subarray(IV_BYTES, IV_BYTES + TAG_BYTES));
      const plain = Buffer.concat([
        decipher.update(bytes.subarray(IV_BYTES + TAG_BYTES)),
        decipher.final(),
      ]);
      return fromBinary(CardSchema, plain);
    },
  };
}
