/**
 * The storefront in a real browser: Debian's chromium driven by playwright-core, against
 * the whole mesh (every service its own process) behind the Envoy edge, which routes the
 * site built from web/ to its static server (web/server) and passes its Connect calls
 * through. Browse, sign up, buy with the good card and watch the order turn CONFIRMED live
 * (WatchOrder), buy with a declined card and see CANCELLED with the reason. Screenshots go
 * to test-results/.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { type Browser, type BrowserContext, chromium, type Page } from "playwright-core";
import { type Mesh, startMesh } from "../support/mesh.js";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));
const CHROMIUM = "/usr/bin/chromium";
const RESULTS = join(ROOT, "test-results", "storefront");
const skip = existsSync(CHROMIUM)
  ? false
  : `no browser at ${CHROMIUM}: install Debian's chromium (apt-get install chromium)`;
/** The fake PSP's delay per call: long enough that the order page shows PENDING first. */
const PSP_LATENCY_MS = 800;
const NEXT_YEAR = String(new Date().getFullYear() + 1);

/** Builds web/ into `outDir` with its own vite config (what `make up` serves). */
async function buildSite(outDir: string): Promise<void> {
  const { build } = await import("vite");
  await build({
    configFile: join(ROOT, "web", "vite.config.ts"),
    root: join(ROOT, "web"),
    logLevel: "warn",
    build: { outDir, emptyOutDir: true },
  });
}

describe("storefront in chromium", { skip, timeout: 120_000 }, () => {
  let site: string;
  let mesh: Mesh;
  let browser: Browser;
  let context: BrowserContext;
  let page: Page;
  const rpcCalls: string[] = [];
  const pageErrors: string[] = [];
  const email = `web-${randomUUID().slice(0, 8)}@example.com`;
  const password = "correct horse battery staple";

  before(async () => {
    // Only this run's screenshots (a previous run's "-failed" ones would mislead).
    rmSync(RESULTS, { recursive: true, force: true });
    mkdirSync(RESULTS, { recursive: true });
    site = mkdtempSync(join(tmpdir(), "meshmart-web-"));
    // The build and the mesh start side by side; the edge needs the build only when it starts.
    const built = buildSite(site);
    [mesh, browser] = await Promise.all([
      built.then(() =>
        startMesh({
          label: "web",
          edge: true,
          storefrontDir: site,
          serviceEnv: { payments: { FAKE_PSP_LATENCY_MS: String(PSP_LATENCY_MS) } },
        }),
      ),
      chromium.launch({
        executablePath: CHROMIUM,
        headless: true,
        args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
      }),
    ]);
    context = await browser.newContext({ viewport: { width: 1200, height: 900 } });
    // Everything the page loads must come from the edge: nothing from the internet.
    await context.route(
      (url) => url.origin !== mesh.edgeUrl,
      (route) => {
        pageErrors.push(`request off-site: ${route.request().url()}`);
        return route.abort();
      },
    );
    page = await context.newPage();
    page.setDefaultTimeout(15_000);
    page.on("request", (req) => {
      const path = new URL(req.url()).pathname;
      if (path.startsWith("/meshmart.")) rpcCalls.push(path);
    });
    page.on("pageerror", (err) => pageErrors.push(String(err)));
    page.on("console", (msg) => {
      // The browser logs every 4xx; an API error the page shows (the sign-up violation) is one.
      if (msg.type() === "error" && !msg.text().startsWith("Failed to load resource")) {
        pageErrors.push(msg.text());
      }
    });
  });

  after(async () => {
    await browser?.close();
    await mesh?.stop();
    if (site !== undefined) rmSync(site, { recursive: true, force: true });
  });

  /** A link of the site's header (pages have links of the same names). */
  const navLink = (name: string | RegExp) =>
    page.getByRole("navigation", { name: "Main" }).getByRole("link", { name });

  const shot = (name: string) =>
    page.screenshot({ path: join(RESULTS, `${name}.png`), fullPage: true });

  /** Runs a flow; on failure, a screenshot of where it stopped. */
  async function flow(name: string, body: () => Promise<void>): Promise<void> {
    try {
      await body();
    } catch (reason) {
      await shot(`${name}-failed`).catch(() => {});
      throw reason;
    }
  }

  /** From any page: the product with this name into the cart, via its product page. */
  async function addProduct(name: string, quantity = 1): Promise<void> {
    await navLink("Shop").click();
    await page.getByLabel("Search products").fill(name);
    await page.getByRole("link", { name, exact: true }).click();
    await page.getByRole("heading", { level: 1, name }).waitFor();
    await page.getByLabel("Quantity").fill(String(quantity));
    await page.getByRole("button", { name: "Add to cart" }).click();
  }

  async function checkout(card: string): Promise<string> {
    await navLink(/^Cart/).click();
    await page.getByRole("link", { name: "Checkout" }).click();
    await page.getByRole("heading", { level: 1, name: "Checkout" }).waitFor();
    await page.getByLabel("Card number").fill(card);
    await page.getByLabel("Expiry month").fill("12");
    await page.getByLabel("Expiry year").fill(NEXT_YEAR);
    await page.getByLabel("CVC").fill("123");
    await page.getByRole("button", { name: /^Place order/ }).click();
    await page.waitForURL(/\/orders\/[0-9a-f-]{36}$/);
    return page.url().split("/").at(-1) ?? "";
  }

  test("browse: products, categories, search, product page, cart", async () => {
    await flow("browse", async () => {
      await page.goto(mesh.edgeUrl);
      await page.getByRole("heading", { level: 1, name: "Shop" }).waitFor();
      const cards = page.locator(".product-card");
      await cards.first().waitFor();
      assert.equal(await cards.count(), 24, "the first page of the demo catalog");
      await page.getByRole("button", { name: "Show more products" }).click();
      await page.getByRole("status").filter({ hasText: "48 products" }).waitFor();

      // Categories come from ListCategories; following one filters the list.
      await page
        .getByRole("navigation", { name: "Categories" })
        .getByRole("link", { name: /^tea/ })
        .click();
      await page.getByRole("heading", { level: 1, name: "Shop: tea" }).waitFor();
      await page.getByRole("status").filter({ hasText: "10 products" }).waitFor();
      // After a navigation, focus is on the new page's heading.
      assert.equal(await page.evaluate("document.activeElement?.tagName"), "H1");

      // Search as you type (ListProducts query), within the category.
      await page.getByLabel("Search products").fill("matcha");
      await page.getByRole("status").filter({ hasText: "1 product for “matcha”" }).waitFor();
      assert.match(page.url(), /[?&]q=matcha/);
      await page.getByRole("link", { name: "Matcha Ceremonial Grade" }).click();
      await page.getByRole("heading", { level: 1, name: "Matcha Ceremonial Grade" }).waitFor();
      await page.getByText("$24.00").first().waitFor();

      await page.getByLabel("Quantity").fill("2");
      await page.getByRole("button", { name: "Add to cart" }).click();
      await page.locator(".site-header .count").filter({ hasText: "2" }).waitFor();
      // A deep link and a reload land on the same page (the site server's index.html fallback).
      await page.reload();
      await page.getByRole("heading", { level: 1, name: "Matcha Ceremonial Grade" }).waitFor();
      await page.locator(".site-header .count").filter({ hasText: "2" }).waitFor();
      await shot("1-product");

      // A narrow screen: the list still lays out (no horizontal scrolling).
      await page.setViewportSize({ width: 360, height: 800 });
      await navLink("Shop").click();
      await page.locator(".product-card").first().waitFor();
      const overflow = Number(
        await page.evaluate(
          "document.documentElement.scrollWidth - document.documentElement.clientWidth",
        ),
      );
      assert.ok(overflow <= 0, `no horizontal overflow on 360px (got ${overflow}px)`);
      await shot("2-narrow-shop");
      await page.setViewportSize({ width: 1200, height: 900 });
    });
  });

  test("sign up: field violations shown by the field, then an account and a session", async () => {
    await flow("signup", async () => {
      await navLink("Sign up").click();
      await page.getByRole("heading", { level: 1, name: "Create an account" }).waitFor();
      await page.getByLabel("Name").fill("Web Shopper");
      await page.getByLabel("Email").fill(email);
      await page.getByLabel("Password").fill("short");
      await page.getByRole("button", { name: "Create account" }).click();
      // INVALID_ARGUMENT from identity, its buf.validate violation next to the password.
      const alert = page.getByRole("alert");
      await alert.waitFor();
      assert.match((await alert.textContent()) ?? "", /Please correct the highlighted fields/);
      assert.match((await alert.textContent()) ?? "", /password/i);
      const passwordInput = page.getByLabel("Password");
      assert.equal(await passwordInput.getAttribute("aria-invalid"), "true");
      assert.equal(
        await page.evaluate('document.activeElement?.getAttribute("name")'),
        "password",
        "focus moves to the field to fix",
      );
      await shot("3-signup-violation");

      await passwordInput.fill(password);
      await page.getByRole("button", { name: "Create account" }).click();
      await page.getByRole("button", { name: "Sign out" }).waitFor();
      await page.getByText("Web Shopper").waitFor();
    });
  });

  test("good card: the order page follows the order live to CONFIRMED", async () => {
    await flow("confirmed", async () => {
      const before = rpcCalls.length;
      const orderId = await checkout("4242 4242 4242 4242");
      const status = page.locator(".order-status [data-status]");
      // The payment provider is slow on purpose: the page first shows PENDING...
      await page.locator('.order-status [data-status="PENDING"]').waitFor();
      // (Expressions as strings: this file is type-checked without the DOM library.)
      await page.evaluate("window.sameDocument = true");
      await shot("4-order-pending");
      // ...then CONFIRMED arrives over the open WatchOrder stream, without a reload.
      await page.locator('.order-status [data-status="CONFIRMED"]').waitFor({ timeout: 20_000 });
      assert.equal(await status.count(), 1);
      assert.equal(
        await page.evaluate("window.sameDocument"),
        true,
        "the same document, not a reload",
      );
      assert.equal(
        await page.getByRole("status").filter({ hasText: "Confirmed" }).count(),
        1,
        "the status is in a live region",
      );
      await page.getByText("This order is final.").waitFor();
      const calls = rpcCalls.slice(before);
      assert.ok(calls.includes("/meshmart.orders.v1.OrderService/PlaceOrder"));
      assert.ok(calls.includes("/meshmart.orders.v1.OrderService/WatchOrder"));
      assert.ok(!calls.includes("/meshmart.orders.v1.OrderService/GetOrder"), "no polling");
      await page.locator(".site-header .count").filter({ hasText: "0" }).waitFor();
      await shot("5-order-confirmed");
      assert.ok(orderId.length === 36);
    });
  });

  test("declined card: CANCELLED with the reason", async () => {
    await flow("declined", async () => {
      await addProduct("Stroopwafels");
      const orderId = await checkout("4000000000000002");
      await page.locator('.order-status [data-status="CANCELLED"]').waitFor({ timeout: 20_000 });
      const reason = (await page.locator(".cancel-reason").textContent()) ?? "";
      assert.match(reason, /declined/i);
      await shot("6-order-cancelled");

      // My orders: both, newest first, with their outcomes.
      await navLink("My orders").click();
      const rows = page.locator(".order-row");
      await rows.nth(1).waitFor();
      assert.equal(await rows.count(), 2);
      assert.equal(
        await rows.nth(0).locator("[data-status]").getAttribute("data-status"),
        "CANCELLED",
      );
      assert.equal(
        await rows.nth(1).locator("[data-status]").getAttribute("data-status"),
        "CONFIRMED",
      );
      assert.match(
        (await rows.nth(0).getByRole("link").textContent()) ?? "",
        new RegExp(orderId.slice(0, 8)),
      );
      await shot("7-my-orders");
    });
  });

  test("notifications: welcome and one per finished order", async () => {
    await flow("notifications", async () => {
      await navLink("Notifications").click();
      const items = page.locator(".notification");
      // Notifications consumes events asynchronously: refresh until all three arrived.
      const deadline = Date.now() + 20_000;
      while ((await items.count()) < 3 && Date.now() < deadline) {
        await page.waitForTimeout(500);
        await page.getByRole("button", { name: "Refresh" }).click();
        await page
          .getByRole("status")
          .filter({ hasText: /notification/ })
          .waitFor();
      }
      assert.equal(await items.count(), 3);
      await shot("8-notifications");
    });
  });

  test("sign out, then sign in: a wrong password gets the API's message", async () => {
    await flow("signin", async () => {
      await page.getByRole("button", { name: "Sign out" }).click();
      await navLink("Sign in").waitFor();
      // A protected page sends the reader to sign in, and back after.
      await page.goto(`${mesh.edgeUrl}/orders`);
      await page.getByRole("heading", { level: 1, name: "Sign in" }).waitFor();
      await page.getByLabel("Email").fill(email);
      await page.getByLabel("Password").fill("not the password at all");
      await page.getByRole("button", { name: "Sign in" }).click();
      const alert = page.getByRole("alert");
      await alert.waitFor();
      const text = (await alert.textContent()) ?? "";
      assert.ok(text.length > 0 && !text.includes("{"), `a message, not a dump: ${text}`);
      assert.doesNotMatch(text, /\[unauthenticated\]|HTTP \d{3}/);
      await shot("9-signin-refused");
      await page.getByLabel("Password").fill(password);
      await page.getByRole("button", { name: "Sign in" }).click();
      await page.getByRole("heading", { level: 1, name: "My orders" }).waitFor();
      await page.locator(".order-row").nth(1).waitFor();
      assert.deepEqual(pageErrors, [], "no page errors, no off-site requests");
    });
  });
});
