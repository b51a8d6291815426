import assert from "node:assert/strict";
import { test } from "node:test";
import { createSoldOutHints } from "../src/sold-out-hints.js";

const WINDOW_MS = 250;

/** Hints on a clock the test moves. */
function hintsAt(windowMs = WINDOW_MS) {
  const clock = { now: 1_000 };
  return { clock, hints: createSoldOutHints(windowMs, () => clock.now) };
}

const want = (productId: string, quantity: number) => [{ productId, quantity }];

test("a refusal says short only for more than the units inventory had", () => {
  const { hints } = hintsAt();
  hints.refused("p", 1n);
  assert.deepEqual(hints.shortage(want("p", 2)), { productId: "p", available: 1n });
  assert.equal(hints.shortage(want("p", 1)), undefined, "one unit may still be had");
  assert.equal(hints.shortage(want("q", 5)), undefined, "another product is unknown");
  assert.deepEqual(hints.shortage([...want("q", 1), ...want("p", 3)])?.productId, "p");
});

test("the order granted the probe keeps it when screened again; others do not get it", () => {
  const { clock, hints } = hintsAt();
  hints.refused("p", 0n);
  clock.now += WINDOW_MS;
  assert.equal(hints.shortage(want("p", 1), "probe"), undefined, "placed: it is the probe");
  assert.ok(hints.shortage(want("p", 1), "other"), "another order goes by the hint");
  // Its reservation step screens it again, within the window: still its call to make.
  clock.now += 10;
  assert.equal(hints.shortage(want("p", 1), "probe"), undefined, "its step asks inventory");
  assert.ok(hints.shortage(want("p", 1), "other"));
});

test("after the window one order asks again while the others go by the hint", () => {
  const { clock, hints } = hintsAt();
  hints.refused("p", 0n);
  clock.now += WINDOW_MS - 1;
  assert.ok(hints.shortage(want("p", 1)), "within the window");
  clock.now += 1;
  assert.equal(hints.shortage(want("p", 1)), undefined, "this one asks inventory");
  assert.ok(hints.shortage(want("p", 1)), "the others wait for its answer");
  clock.now += WINDOW_MS;
  assert.equal(
    hints.shortage(want("p", 1)),
    undefined,
    "an unanswered probe is followed by another",
  );
  hints.refused("p", 0n);
  assert.ok(hints.shortage(want("p", 1)), "a refusal renews the hint");
});

test("a reservation that succeeds clears the product's hint", () => {
  const { hints } = hintsAt();
  hints.refused("p", 0n);
  hints.refused("q", 0n);
  hints.reserved(["p"]);
  assert.equal(hints.shortage(want("p", 1)), undefined);
  assert.ok(hints.shortage(want("q", 1)));
});

test("a window of 0 remembers nothing", () => {
  const { hints } = hintsAt(0);
  hints.refused("p", 0n);
  assert.equal(hints.shortage(want("p", 1)), undefined);
});

test("at most 10,000 products are remembered, the oldest refusal forgotten first", () => {
  const { hints } = hintsAt();
  for (let i = 0; i <= 10_000; i++) hints.refused(`p${i}`, 0n);
  assert.equal(hints.shortage(want("p0", 1)), undefined, "the oldest went");
  assert.ok(hints.shortage(want("p1", 1)));
  assert.ok(hints.shortage(want("p10000", 1)));
});
