import { runMain } from "@meshmart/kit";
import { identityConfigSchema } from "./config.js";
import { startIdentity } from "./server.js";

runMain(identityConfigSchema, (config) => startIdentity(config));
