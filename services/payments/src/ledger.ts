/**
 * Payments' double-entry bookkeeping, as pure functions: each movement of money is one
 * balanced posting (sum of debits = sum of credits). The store writes them; the database
 * refuses an unbalanced one at commit (see migrations/001_payments.sql).
 *
 * Accounts, per payment:
 *   customer_hold   funds held on the customer's card (open authorization)
 *   psp_pending     the processor's side of that hold
 *   psp_receivable  money the processor collected for us and owes us
 *   revenue         money charged; credits minus debits is the payment's net captured amount
 */
export type LedgerAccount = "customer_hold" | "psp_pending" | "psp_receivable" | "revenue";

/** What kind of movement a posting records. */
export type PostingKind = "authorize" | "capture" | "void" | "refund";

/** One line of a posting: exactly one of debit and credit is non-zero. */
export interface LedgerEntry {
  account: LedgerAccount;
  debitMinor: bigint;
  creditMinor: bigint;
}

/** One balanced ledger transaction. */
export interface Posting {
  kind: PostingKind;
  currency: string;
  memo: string;
  refundId?: string;
  entries: LedgerEntry[];
}

/** Funds are held: debit customer_hold, credit psp_pending. */
export function authorizePosting(amountMinor: bigint, currency: string): Posting {
  return posting("authorize", currency, "", [
    transfer("customer_hold", "psp_pending", amountMinor),
  ]);
}

/** The hold is consumed and the customer charged: the hold reverses, revenue is credited. */
export function capturePosting(amountMinor: bigint, currency: string): Posting {
  return posting("capture", currency, "", [
    transfer("psp_pending", "customer_hold", amountMinor),
    transfer("psp_receivable", "revenue", amountMinor),
  ]);
}

/** The hold is released without a charge: the authorization reverses. */
export function voidPosting(amountMinor: bigint, currency: string, reason: string): Posting {
  return posting("void", currency, reason, [transfer("psp_pending", "customer_hold", amountMinor)]);
}

/** Money goes back to the customer: revenue is debited. */
export function refundPosting(
  amountMinor: bigint,
  currency: string,
  reason: string,
  refundId: string,
): Posting {
  return {
    ...posting("refund", currency, reason, [transfer("revenue", "psp_receivable", amountMinor)]),
    refundId,
  };
}

/** Throws unless the posting is well formed: positive one-sided lines, debits = credits. */
export function assertBalanced(p: Posting): void {
  let debits = 0n;
  let credits = 0n;
  for (const e of p.entries) {
    if (
      e.debitMinor < 0n ||
      e.creditMinor < 0n ||
      (e.debitMinor === 0n) === (e.creditMinor === 0n)
    ) {
      throw new Error(`ledger ${p.kind} posting has a malformed entry on ${e.account}`);
    }
    debits += e.debitMinor;
    credits += e.creditMinor;
  }
  if (p.entries.length === 0 || debits !== credits) {
    throw new Error(`ledger ${p.kind} posting is unbalanced`);
  }
}

function posting(
  kind: PostingKind,
  currency: string,
  memo: string,
  pairs: LedgerEntry[][],
): Posting {
  const p: Posting = { kind, currency, memo, entries: pairs.flat() };
  assertBalanced(p);
  return p;
}

function transfer(debit: LedgerAccount, credit: LedgerAccount, amountMinor: bigint): LedgerEntry[] {
  return [
    { account: debit, debitMinor: amountMinor, creditMinor: 0n },
    { account: credit, debitMinor: 0n, creditMinor: amountMinor },
  ];
}
