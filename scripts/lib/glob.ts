import type { Dirent } from "node:fs";
import { readdir } from "node:fs/promises";
import { join, relative, sep } from "node:path";

const MAGIC = /[*?]/;

/**
 * Files under `root` matching any of `patterns` (`*`, `?`, `**`; relative, `/`-separated),
 * sorted, without duplicates. Node 20 has neither fs.glob nor glob support in `--test`,
 * and this is all the test runner needs. node_modules and dot-directories are skipped.
 */
export async function expandGlobs(root: string, patterns: readonly string[]): Promise<string[]> {
  const found = new Set<string>();
  for (const pattern of patterns) {
    const parts = pattern.split("/");
    const firstMagic = parts.findIndex((p) => MAGIC.test(p));
    const base = firstMagic === -1 ? parts.join("/") : parts.slice(0, firstMagic).join("/");
    const matcher = globToRegExp(pattern);
    for await (const file of walk(join(root, base))) {
      const rel = relative(root, file).split(sep).join("/");
      if (matcher.test(rel)) found.add(rel);
    }
  }
  return [...found].sort();
}

/** Whether `arg` contains glob syntax. */
export function isGlob(arg: string): boolean {
  return MAGIC.test(arg);
}

/** A RegExp for a whole relative path. */
export function globToRegExp(pattern: string): RegExp {
  let out = "";
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern.charAt(i);
    if (c === "*" && pattern[i + 1] === "*") {
      // `**/` matches zero or more whole directories; a trailing `**` matches anything.
      if (pattern[i + 2] === "/") {
        out += "(?:[^/]+/)*";
        i += 2;
      } else {
        out += ".*";
        i += 1;
      }
    } else if (c === "*") {
      out += "[^/]*";
    } else if (c === "?") {
      out += "[^/]";
    } else {
      out += c.replace(/[.+^${}()|[\]\\]/g, "\\$&");
    }
  }
  return new RegExp(`^${out}$`);
}

async function* walk(dir: string): AsyncGenerator<string> {
  let entries: Dirent[];
  try {
    entries = await readdir(dir, { withFileTypes: true });
  } catch {
    return;
  }
  for (const entry of entries) {
    if (entry.name === "node_modules" || entry.name.startsWith(".")) continue;
    const path = join(dir, entry.name);
    if (entry.isDirectory()) yield* walk(path);
    else if (entry.isFile()) yield path;
  }
}
