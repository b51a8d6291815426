import { runMain } from "@meshmart/kit";
import { notificationsConfigSchema } from "./config.js";
import { startNotifications } from "./server.js";

runMain(notificationsConfigSchema, (config) => startNotifications(config));
