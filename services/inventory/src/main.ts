import { runMain } from "@meshmart/kit";
import { inventoryConfigSchema } from "./config.js";
import { startInventory } from "./server.js";

runMain(inventoryConfigSchema, (config) => startInventory(config));
