import type { DescField } from "@bufbuild/protobuf";
import { buildPath } from "@bufbuild/protobuf/reflect";
import { ValidationError, Violation, violationsToProto } from "@bufbuild/protovalidate";
import { Code, ConnectError } from "@connectrpc/connect";

/**
 * INVALID_ARGUMENT naming one field of the request, shaped exactly as the validation
 * interceptor reports protovalidate's rules (a buf.validate.Violations detail, the message
 * `field: what is wrong [rule_id]`), for checks a handler makes itself.
 */
export function fieldViolation(field: DescField, ruleId: string, message: string): ConnectError {
  const error = new ValidationError([
    new Violation(message, ruleId, buildPath(field.parent).field(field).toPath(), [], false),
  ]);
  const [value, desc] = violationsToProto(error.violations);
  return new ConnectError(error.message, Code.InvalidArgument, undefined, [{ desc, value }]);
}
