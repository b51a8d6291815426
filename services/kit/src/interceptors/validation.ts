import { createValidator } from "@bufbuild/protovalidate";
import type { Interceptor } from "@connectrpc/connect";
import { createValidateInterceptor } from "@connectrpc/validate";

/**
 * Enforces the protovalidate rules written in the protos on every request message:
 * INVALID_ARGUMENT with a buf.validate.Violations detail naming each bad field.
 * One validator per process: it compiles and caches rules (CEL programs) per message type.
 */
export function createValidationInterceptor(): Interceptor {
  return createValidateInterceptor({ validator: createValidator() });
}
