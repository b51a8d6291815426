import { runMain } from "@meshmart/kit";
import { paymentsConfigSchema } from "./config.js";
import { startPayments } from "./server.js";

runMain(paymentsConfigSchema, (config) => startPayments(config));
