/**
 * The local mesh's certificate authority, standing in for istiod's CA: one self-signed root
 * per `make up` (or test run), and per workload a short-lived leaf whose only name is its
 * SPIFFE identity, `spiffe://<trust domain>/ns/<namespace>/sa/<service account>`, as Istio
 * issues them. ECDSA P-256 keys (Istio's default is RSA 2048; Envoy takes either).
 *
 * Made with the `openssl` command (OpenSSL ≥ 3.0, Debian package `openssl`): Node's crypto
 * makes keys but cannot sign certificates, and the npm X.509 libraries need a reflection
 * polyfill loaded before them, which a script imported by tests cannot arrange.
 */
import { execFileSync } from "node:child_process";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { principal } from "../deploy/callgraph.js";

/** Istio's default workload certificate lifetime is 24 h; `openssl -days 1` is exactly that. */
export const WORKLOAD_CERT_DAYS = 1;
const CURVE = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-noenc"];

/**
 * The SPIFFE id Istio gives a workload running as `serviceAccount` in `namespace`: its
 * AuthorizationPolicy principal as a URI.
 */
export function spiffeId(namespace: string, serviceAccount: string): string {
  return `spiffe://${principal(namespace, serviceAccount)}`;
}

/** PEM files of one identity, as Envoy and Node's TLS read them. */
export interface IdentityFiles {
  /** The SPIFFE id in the certificate's URI SAN. */
  id: string;
  certFile: string;
  keyFile: string;
}

/** A CA that writes its root and the identities it issues under one directory. */
export interface LocalCa {
  readonly rootFile: string;
  /** Issues (and writes) a leaf for `serviceAccount` in `namespace`. */
  issue(namespace: string, serviceAccount: string): IdentityFiles;
}

function openssl(args: string[]): void {
  try {
    execFileSync("openssl", args, { stdio: ["ignore", "ignore", "pipe"] });
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === "ENOENT") {
      throw new Error(
        "openssl not found: install the Debian package openssl (apt-get install openssl)",
      );
    }
    const stderr = (error as { stderr?: Buffer }).stderr?.toString() ?? "";
    throw new Error(`openssl ${args[0]} failed: ${stderr.trim()}`);
  }
}

/**
 * Creates a fresh root (`O=<organization>`) in `dir` (keys mode 0600). A second CA made the
 * same way is a stranger to the first: tests use one to prove sidecars refuse its leaves.
 */
export function createLocalCa(dir: string, organization = "meshmart-local"): LocalCa {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const rootFile = join(dir, "root-cert.pem");
  const rootKey = join(dir, "root-key.pem");
  openssl([
    "req",
    "-x509",
    ...CURVE,
    "-keyout",
    rootKey,
    "-out",
    rootFile,
    "-days",
    "7",
    "-subj",
    `/O=${organization}/CN=${organization} root CA`,
    "-addext",
    "basicConstraints=critical,CA:TRUE,pathlen:0",
    "-addext",
    "keyUsage=critical,keyCertSign,cRLSign",
  ]);
  return {
    rootFile,
    issue(namespace, serviceAccount) {
      const id = spiffeId(namespace, serviceAccount);
      const base = join(dir, `${namespace}.${serviceAccount}`);
      const identity = { id, certFile: `${base}.cert.pem`, keyFile: `${base}.key.pem` };
      openssl([
        "req",
        "-x509",
        ...CURVE,
        "-keyout",
        identity.keyFile,
        "-out",
        identity.certFile,
        "-CA",
        rootFile,
        "-CAkey",
        rootKey,
        "-days",
        String(WORKLOAD_CERT_DAYS),
        // Istio's workload certificates carry their identity in the SAN only.
        "-subj",
        `/O=${organization}`,
        "-addext",
        `subjectAltName=critical,URI:${id}`,
        "-addext",
        "basicConstraints=critical,CA:FALSE",
        "-addext",
        "keyUsage=critical,digitalSignature,keyEncipherment",
        "-addext",
        "extendedKeyUsage=serverAuth,clientAuth",
      ]);
      return identity;
    },
  };
}
