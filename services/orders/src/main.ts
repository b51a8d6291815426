import { runMain } from "@meshmart/kit";
import { ordersConfigSchema } from "./config.js";
import { startOrders } from "./server.js";

runMain(ordersConfigSchema, (config) => startOrders(config));
