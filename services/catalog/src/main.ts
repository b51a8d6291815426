import { runMain } from "@meshmart/kit";
import { catalogConfigSchema } from "./config.js";
import { startCatalog } from "./server.js";

runMain(catalogConfigSchema, (config) => startCatalog(config));
