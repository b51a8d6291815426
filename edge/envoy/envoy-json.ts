/** Small builders for Envoy's JSON/YAML config shapes, shared by the edge's generator modules. */

/** A typed_config: an Any of Envoy API type `type` with `body` as its fields. */
export const any = (type: string, body: Record<string, unknown>) => ({
  "@type": `type.googleapis.com/${type}`,
  ...body,
});

/** A runtime fractional percent that defaults to 100 % (filter_enabled, filter_enforced). */
export const pct100 = (runtimeKey: string) => ({
  runtime_key: runtimeKey,
  default_value: { numerator: 100, denominator: "HUNDRED" },
});
