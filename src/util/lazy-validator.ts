// Ajv validators compiled at first use, not at import: compiling every schema a
// module holds (and Ajv's meta-schema with the first) costs a short-lived command
// such as `introvisor inspect` most of its start-up, for schemas it never uses.
import type { ValidateFunction } from 'ajv';

/** A validator that calls `compile` at its first use; `errors` are the last call's, as Ajv's. */
export function compiledOnUse<T = unknown>(compile: () => ValidateFunction<T>): ValidateFunction<T> {
  let v: ValidateFunction<T> | undefined;
  const f = (data: unknown): data is T => {
    v ??= compile();
    return v(data);
  };
  Object.defineProperty(f, 'errors', { get: () => v?.errors ?? null, enumerable: true });
  return f as unknown as ValidateFunction<T>;
}
