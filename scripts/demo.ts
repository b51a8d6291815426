/**
 * `make demo`: a customer's visit to the running `make up` mesh, through the REST edge.
 *
 *   node --conditions=development --import tsx scripts/demo.ts [edge URL, default http://127.0.0.1:8080]
 *
 * Signs up, logs in, browses, places one order with the good test card and one with the
 * declined card, follows both to CONFIRMED / CANCELLED, and prints the notifications.
 */
import { randomUUID } from "node:crypto";

const edge = process.argv[2] ?? process.env.EDGE_URL ?? "http://127.0.0.1:8080";

interface Json {
  // biome-ignore lint/suspicious/noExplicitAny: a demo prints what the API returns.
  [key: string]: any;
}

async function call(method: string, path: string, body?: unknown, token?: string): Promise<Json> {
  let res: Response;
  try {
    res = await fetch(`${edge}${path}`, {
      method,
      headers: {
        ...(body === undefined ? {} : { "content-type": "application/json" }),
        ...(token === undefined ? {} : { authorization: `Bearer ${token}` }),
      },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
  } catch {
    throw new Error(`cannot reach the edge at ${edge}; is \`make up\` running?`);
  }
  const json = (await res.json()) as Json;
  if (!res.ok) throw new Error(`${method} ${path} → ${res.status}: ${json.message ?? ""}`);
  return json;
}

const step = (text: string): void => {
  process.stdout.write(`\n▸ ${text}\n`);
};
const show = (text: string): void => {
  process.stdout.write(`  ${text}\n`);
};

/** Money as the API's JSON carries it (units as a string, nanos optional), e.g. "EUR 49.90". */
function money(m: Json): string {
  const cents = String(Math.round((m.nanos ?? 0) / 10_000_000)).padStart(2, "0");
  return `${m.currencyCode} ${m.units ?? 0}.${cents}`;
}

async function finished(orderId: string, token: string): Promise<Json> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    const { order } = await call("GET", `/v1/orders/${orderId}`, undefined, token);
    if (order.status !== "ORDER_STATUS_PENDING") return order;
    if (Date.now() > deadline) throw new Error(`order ${orderId} still PENDING after 30 s`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

async function main(): Promise<void> {
  const email = `demo-${randomUUID().slice(0, 8)}@example.com`;
  const password = "correct horse battery staple";
  step(`sign up ${email} and log in`);
  await call("POST", "/v1/users", { email, password, displayName: "Demo Shopper" });
  const { accessToken } = await call("POST", "/v1/sessions", { email, password });
  show("got an access token");

  step("browse the catalog");
  const { products } = await call("GET", "/v1/products?page_size=3");
  for (const p of products) {
    show(`${p.sku.padEnd(12)} ${p.name.padEnd(32)} ${money(p.price)}`);
  }
  const [first, second] = products;

  const cards = [
    { label: "good card 4242…4242", number: "4242424242424242" },
    { label: "declined card 4000…0002", number: "4000000000000002" },
  ];
  for (const { label, number } of cards) {
    step(`place an order with the ${label}`);
    const { order } = await call(
      "POST",
      "/v1/orders",
      {
        requestId: randomUUID(),
        items: [
          { productId: first.id, quantity: 1 },
          { productId: second.id, quantity: 2 },
        ],
        payment: { card: { number, expMonth: 12, expYear: 2030, cvc: "123" } },
      },
      accessToken,
    );
    show(`order ${order.id}: ${order.status}`);
    const done = await finished(order.id, accessToken);
    const why = done.cancelReason ? ` (${done.cancelReason})` : "";
    show(
      `order ${order.id}: ${done.status}${why}, total ${done.total.currencyCode} ${done.total.units}`,
    );
  }

  step("notifications");
  const deadline = Date.now() + 15_000;
  let notifications: Json[] = [];
  while (Date.now() < deadline) {
    ({ notifications } = await call("GET", "/v1/notifications", undefined, accessToken));
    if (notifications.length >= 3) break;
    await new Promise((r) => setTimeout(r, 300));
  }
  for (const n of notifications) show(`${n.kind}: ${n.subject}`);
}

main().catch((error: unknown) => {
  console.error(error instanceof Error ? error.message : error);
  process.exit(1);
});
