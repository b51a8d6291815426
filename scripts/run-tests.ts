/**
 * The test phase of `make test`:
 *
 *   node --conditions=development --import tsx scripts/run-tests.ts [files|dirs|globs] [--node-test-flag=value]
 *
 * Finds or starts Postgres, Redis and NATS JetStream (ports distinct from `make up`'s, data
 * in .data/test), hands them to the tests as TEST_DATABASE_URL / TEST_REDIS_URL /
 * TEST_NATS_URL, runs `node --test` over the files, forwards its exit code, and always
 * stops what it started. TEST_* already set in the environment are used as they are.
 */
import { spawn } from "node:child_process";
import { existsSync, statSync } from "node:fs";
import { constants } from "node:os";
import { dirname, join, relative, resolve, sep } from "node:path";
import { fileURLToPath } from "node:url";
import { ensureInfra, type Infra } from "@meshmart/kit/testing";
import { expandGlobs, isGlob } from "./lib/glob.js";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");
const DEFAULT_PATTERNS = [
  "services/*/test/**/*.test.ts",
  "edge/**/test/**/*.test.ts",
  "web/server/test/**/*.test.ts",
  "tests/**/*.test.ts",
];
const PORTS = { postgres: 55432, redis: 56379, nats: 54222 };
// The lines ensureInfra ends each component with; the summary line below says the same.
const SUMMARISED =
  /^(postgres|redis|nats): (embedded on|reusing|using|redis-server on|nats-server -js on) /;

const say = (line: string): void => {
  process.stdout.write(`${line}\n`);
};

async function main(): Promise<number> {
  const args = process.argv.slice(2);
  const nodeFlags = args.filter((a) => a.startsWith("-"));
  const selectors = args.filter((a) => !a.startsWith("-"));
  const files = await testFiles(selectors);
  if (files.length === 0) {
    say(`no test files match ${(selectors.length > 0 ? selectors : DEFAULT_PATTERNS).join(" ")}`);
    return selectors.length > 0 ? 1 : 0;
  }

  let infra: Infra | undefined;
  let child: ReturnType<typeof spawn> | undefined;
  let signalled: NodeJS.Signals | undefined;
  const onSignal = (signal: NodeJS.Signals): void => {
    // The test run is in our process group, so a terminal Ctrl-C reached it already;
    // forwarding covers a `kill` aimed at us alone. Cleanup happens when it exits.
    signalled = signal;
    if (child !== undefined) child.kill(signal);
    else process.exitCode = 128 + (constants.signals[signal] ?? 0);
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);

  try {
    infra = await ensureInfra({
      dataDir: join(ROOT, ".data", "test"),
      ports: PORTS,
      log: (line) => {
        if (!SUMMARISED.test(line)) say(`test infra: ${line}`);
      },
      installMissing: process.env.CI === "true" || process.getuid?.() === 0,
      urls: {
        postgres: process.env.TEST_DATABASE_URL,
        redis: process.env.TEST_REDIS_URL,
        nats: process.env.TEST_NATS_URL,
      },
      envNames: { postgres: "TEST_DATABASE_URL", redis: "TEST_REDIS_URL", nats: "TEST_NATS_URL" },
      // Test data is disposable; fsync off makes schema-heavy suites several times faster.
      durable: false,
    });
    say(
      `test infra: postgres ${infra.describe.postgres}; redis ${infra.describe.redis}; nats ${infra.describe.nats}`,
    );
    if (signalled !== undefined) return 128 + (constants.signals[signalled] ?? 0);

    const testArgs = [
      "--conditions=development",
      "--import",
      "tsx",
      "--test",
      "--test-concurrency=2",
      ...nodeFlags,
      ...files,
    ];
    const running = spawn(process.execPath, testArgs, {
      cwd: ROOT,
      stdio: "inherit",
      env: {
        ...process.env,
        TEST_DATABASE_URL: infra.postgresUrl,
        TEST_REDIS_URL: infra.redisUrl,
        TEST_NATS_URL: infra.natsUrl,
      },
    });
    child = running;
    return await new Promise<number>((resolve) => {
      running.once("error", (error) => {
        console.error(`could not run node --test: ${error.message}`);
        resolve(1);
      });
      running.once("exit", (code, signal) => {
        const by = signalled ?? signal;
        resolve(by === null ? (code ?? 1) : 128 + (constants.signals[by] ?? 0));
      });
    });
  } finally {
    await infra?.stop();
  }
}

/** Test files for the command-line selectors (files, directories or globs), or the defaults. */
async function testFiles(selectors: string[]): Promise<string[]> {
  if (selectors.length === 0) return expandGlobs(ROOT, DEFAULT_PATTERNS);
  const files = new Set<string>();
  for (const selector of selectors) {
    if (isGlob(selector)) {
      for (const f of await expandGlobs(ROOT, [selector.replace(/^\.\//, "")])) files.add(f);
      continue;
    }
    const rel = relative(ROOT, resolve(selector)).split(sep).join("/");
    if (existsSync(join(ROOT, rel)) && statSync(join(ROOT, rel)).isDirectory()) {
      for (const f of await expandGlobs(ROOT, [`${rel}/**/*.test.ts`])) files.add(f);
    } else if (existsSync(join(ROOT, rel))) {
      files.add(rel);
    } else {
      throw new Error(`no such test file or directory: ${selector}`);
    }
  }
  return [...files];
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (error: unknown) => {
    console.error(error instanceof Error ? error.message : error);
    process.exitCode = 1;
  },
);
