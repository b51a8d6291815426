/**
 * The storefront's static files (web/'s vite build) served behind the edge at `/`. Only
 * GET and HEAD of paths nothing else claims reach it: the API (/v1/*, /.well-known/*,
 * /openapi.json, /readyz, /healthz) and Connect/gRPC-Web paths (`/pkg.Service/Method`)
 * are never answered from here, even when a file of that name exists.
 */
import { createHash } from "node:crypto";
import { existsSync, realpathSync, statSync } from "node:fs";
import { readFile, realpath, stat } from "node:fs/promises";
import type { IncomingMessage, ServerResponse } from "node:http";
import { extname, join, resolve, sep } from "node:path";
import { promisify } from "node:util";
import { gzip as gzipCallback } from "node:zlib";

const gzip = promisify(gzipCallback);

const TYPES: Readonly<Record<string, string>> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".mjs": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".json": "application/json",
  ".map": "application/json",
  ".webmanifest": "application/manifest+json",
  ".txt": "text/plain; charset=utf-8",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".jpg": "image/jpeg",
  ".jpeg": "image/jpeg",
  ".gif": "image/gif",
  ".webp": "image/webp",
  ".avif": "image/avif",
  ".ico": "image/x-icon",
  ".woff": "font/woff",
  ".woff2": "font/woff2",
};
const COMPRESSIBLE = new Set([".html", ".js", ".mjs", ".css", ".json", ".map", ".svg", ".txt"]);

/** Vite puts content-hashed files here: their URL changes whenever their bytes do. */
const HASHED_PREFIX = "/assets/";
const IMMUTABLE = "public, max-age=31536000, immutable";
/** Everything else (index.html above all) is revalidated, so a deploy shows at once. */
const REVALIDATE = "no-cache";

/**
 * The storefront only talks to its own origin; no inline script, no third-party anything.
 * `style-src 'unsafe-inline'` is absent on purpose: the site sets styles by class only.
 */
const SECURITY_HEADERS: Readonly<Record<string, string>> = {
  "content-security-policy":
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'self'; " +
    "form-action 'self'; frame-ancestors 'none'",
  "x-content-type-options": "nosniff",
  "referrer-policy": "same-origin",
  "x-frame-options": "DENY",
};

/** Paths the API owns; the site never answers them, so they keep their JSON errors. */
const RESERVED_EXACT = new Set(["/openapi.json", "/readyz", "/healthz", "/v1"]);
const RESERVED_PREFIXES = ["/v1/", "/.well-known/"];
/** Connect, gRPC-Web and gRPC paths: `/package.Service/Method`. */
const RPC_PATH = /^\/[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)+\/[A-Za-z_][\w]*$/;

/** Whether `path` (decoded or not) belongs to the API rather than to the site. */
export function isReservedPath(path: string): boolean {
  if (RESERVED_EXACT.has(path) || RPC_PATH.test(path)) return true;
  return RESERVED_PREFIXES.some((prefix) => path.startsWith(prefix));
}

interface CachedFile {
  mtimeMs: number;
  size: number;
  body: Buffer;
  gzipped: Buffer | undefined;
  etag: string;
}

/** The storefront's files, served from one directory. */
export interface StaticSite {
  readonly root: string;
  /**
   * Answers a GET or HEAD of `path` (the URL path, not decoded) from the site: the file, or
   * index.html for a client route (a path whose last segment has no extension). False when
   * the request is not the site's (other method, API path, missing asset): the caller goes
   * on and answers it as before.
   */
  serve(req: IncomingMessage, res: ServerResponse, path: string): Promise<boolean>;
}

/**
 * A site over `dir`, which must hold an index.html (the build's output): a missing build is
 * an error at start, not a 404 at the first visit.
 */
export function createStaticSite(dir: string): StaticSite {
  const root = resolve(dir);
  const index = join(root, "index.html");
  if (!existsSync(index) || !statSync(index).isFile()) {
    throw new Error(`${root} has no index.html: build the storefront first (npm run build -w web)`);
  }
  const realRoot = realpathSync(root);
  const cache = new Map<string, CachedFile>();

  /** The file's bytes, from memory while its size and mtime are unchanged. */
  const load = async (file: string): Promise<CachedFile | undefined> => {
    let info: Awaited<ReturnType<typeof stat>>;
    try {
      // A symlink inside the site must not lead out of it.
      const real = await realpath(file);
      if (!real.startsWith(realRoot + sep)) return undefined;
      info = await stat(real);
    } catch {
      return undefined;
    }
    if (!info.isFile()) return undefined;
    const cached = cache.get(file);
    if (cached !== undefined && cached.mtimeMs === info.mtimeMs && cached.size === info.size) {
      return cached;
    }
    const body = await readFile(file);
    const entry: CachedFile = {
      mtimeMs: info.mtimeMs,
      size: info.size,
      body,
      // Compressed once per version of the file, not per request.
      gzipped: COMPRESSIBLE.has(extname(file)) && body.length > 1024 ? await gzip(body) : undefined,
      // Weak: the gzip and identity encodings of one file are the same content.
      etag: `W/"${createHash("sha256").update(body).digest("base64url").slice(0, 27)}"`,
    };
    cache.set(file, entry);
    return entry;
  };

  /** The absolute file a URL path names, or undefined when it could escape the root. */
  const fileOf = (path: string): string | undefined => {
    let decoded: string;
    try {
      decoded = decodeURIComponent(path);
    } catch {
      return undefined;
    }
    const segments = decoded.split("/").slice(1);
    // No dot-files or dot-dirs (".env", "..") and no NUL or backslash tricks.
    if (segments.some((s) => s.startsWith(".") || s.includes("\0") || s.includes("\\"))) {
      return undefined;
    }
    const file = resolve(root, ...segments);
    return file === root || file.startsWith(root + sep) ? file : undefined;
  };

  const send = (
    req: IncomingMessage,
    res: ServerResponse,
    file: CachedFile,
    type: string,
    cacheControl: string,
  ): void => {
    const headers: Record<string, string | number> = {
      ...SECURITY_HEADERS,
      "content-type": type,
      "cache-control": cacheControl,
      etag: file.etag,
      vary: "Accept-Encoding",
    };
    const match = req.headers["if-none-match"];
    if (match?.split(",").some((tag) => tag.trim() === file.etag)) {
      res.writeHead(304, headers);
      res.end();
      return;
    }
    const acceptsGzip = /\bgzip\b/.test(String(req.headers["accept-encoding"] ?? ""));
    const body = acceptsGzip && file.gzipped !== undefined ? file.gzipped : file.body;
    if (body === file.gzipped) headers["content-encoding"] = "gzip";
    headers["content-length"] = body.length;
    res.writeHead(200, headers);
    res.end(req.method === "HEAD" ? undefined : body);
  };

  return {
    root,
    async serve(req, res, path) {
      if (req.method !== "GET" && req.method !== "HEAD") return false;
      if (isReservedPath(path)) return false;
      const file = fileOf(path === "/" ? "/index.html" : path);
      if (file === undefined) return false;
      if (file !== root) {
        const found = await load(file);
        if (found !== undefined) {
          const type = TYPES[extname(file).toLowerCase()] ?? "application/octet-stream";
          send(req, res, found, type, path.startsWith(HASHED_PREFIX) ? IMMUTABLE : REVALIDATE);
          return true;
        }
      }
      // A client route (/products/…, /orders/…): the app's shell, which routes in the browser.
      // A missing file with an extension (a stale /assets/x.js) stays a 404, not HTML.
      const last = path.slice(path.lastIndexOf("/") + 1);
      if (last.includes(".") || path.startsWith(HASHED_PREFIX)) return false;
      const shell = await load(index);
      if (shell === undefined) return false;
      send(req, res, shell, "text/html; charset=utf-8", REVALIDATE);
      return true;
    },
  };
}
