/** `node edge/src/main.ts`: the local edge, configured from the environment. */
import { runMain } from "@meshmart/kit";
import { edgeConfigSchema } from "./config.js";
import { startEdge } from "./server.js";

runMain(edgeConfigSchema, (config) => startEdge(config));
