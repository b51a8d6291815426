import type { DescMessage } from "@bufbuild/protobuf";
import {
  createValidator,
  ValidationError,
  type Validator,
  violationsToProto,
} from "@bufbuild/protovalidate";
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import { nulViolations } from "./nul-strings.js";

/**
 * Enforces the protovalidate rules written in the protos on every request message, plus
 * one rule no proto states: no string may contain U+0000 (Postgres refuses it in text, so
 * it would surface as INTERNAL from the database). Failures are INVALID_ARGUMENT with a
 * buf.validate.Violations detail naming each bad field. One validator per process: it
 * compiles and caches rules (CEL programs) per message type.
 */
export function createValidationInterceptor(): Interceptor {
  const validator = createValidator();
  return (next) => (req) => {
    if (!req.stream) {
      check(validator, req.method.input, req.message);
      return next(req);
    }
    const input = req.message;
    const schema = req.method.input;
    return next({
      ...req,
      message: (async function* () {
        for await (const message of input) {
          check(validator, schema, message);
          yield message;
        }
      })(),
    });
  };
}

function check(validator: Validator, schema: DescMessage, message: object): void {
  const nul = nulViolations(schema, message);
  const result = validator.validate(schema, message as never);
  if (nul.length === 0 && result.kind === "valid") return;
  if (result.kind === "error" && nul.length === 0) {
    // As @connectrpc/validate answers a rule that cannot be evaluated.
    throw new ConnectError(result.error.message, Code.InvalidArgument, undefined, [], result.error);
  }
  const error = new ValidationError([
    ...nul,
    ...(result.kind === "invalid" ? result.violations : []),
  ]);
  const [value, desc] = violationsToProto(error.violations);
  throw new ConnectError(error.message, Code.InvalidArgument, undefined, [{ desc, value }], error);
}
