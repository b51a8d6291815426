/**
 * `make up MESH=1`: the settings that choose the sidecar mesh and its replicas. The mesh
 * itself is planned by local-mesh.ts and started by scripts/up.ts like every other process.
 */

/** The services REPLICAS multiplies: orders' callees, where retries and ejection matter. */
export const REPLICATED = ["catalog", "inventory", "payments"] as const;

/** Whether MESH=1 (or true/yes) asks for sidecars. */
export function meshRequested(env: NodeJS.ProcessEnv = process.env): boolean {
  return ["1", "true", "yes"].includes((env.MESH ?? "").toLowerCase());
}

/** Instances of `service`: REPLICAS (1–5, default 1) for {@link REPLICATED}, else one. */
export function replicasOf(service: string, env: NodeJS.ProcessEnv = process.env): number {
  if (!(REPLICATED as readonly string[]).includes(service)) return 1;
  const value = env.REPLICAS ?? "1";
  const count = Number(value);
  if (!Number.isInteger(count) || count < 1 || count > 5) {
    throw new Error(`REPLICAS must be a whole number from 1 to 5, not ${JSON.stringify(value)}`);
  }
  return count;
}
