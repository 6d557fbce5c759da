/**
 * The AWS SDK warns at every start under Node 20 that its 2027 releases need
 * Node 22 (the Lambda runtime is Node 22). Drop that one notice; keep all others.
 * Imported for its effect by the CLI entry and the test setup.
 */
const emitWarning = process.emitWarning.bind(process) as (...args: unknown[]) => void;
process.emitWarning = ((warning: string | Error, ...rest: unknown[]) => {
  if (String(warning).startsWith('NodeVersionSupportWarning')) return;
  emitWarning(warning, ...rest);
}) as typeof process.emitWarning;
