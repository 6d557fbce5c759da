/** JSON logs (pino) on stdout: one object per line, what journald and log shippers expect. */
import { pino, type Logger } from 'pino';

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';
/** What library modules take: no logger object, no global. */
export type LogFn = (level: LogLevel, msg: string, fields?: Record<string, unknown>) => void;

export function createLogger(level: string, bindings: Record<string, unknown>, destination?: NodeJS.WritableStream): Logger {
  return pino({ level, base: { ...bindings }, timestamp: pino.stdTimeFunctions.isoTime, formatters: { level: (label) => ({ level: label }) } }, destination ?? process.stdout);
}

export function logFn(logger: Logger): LogFn {
  return (level, msg, fields) => logger[level](fields ?? {}, msg);
}
