/**
 * `bootfarm appliance run`: the entry point (what the systemd unit calls).
 * Only this file reads the config file and signals; a bad config stops
 * start-up with a message naming the field.
 */
import { loadConfig, loadCredential } from './config.js';
import { startAppliance, type ApplianceHandle } from './daemon.js';
import { createLogger, logFn } from './log.js';

export interface RunOptions {
  dataDir: string;
  /** Override of the config's log level. */
  logLevel?: string;
  /** Stop on SIGINT/SIGTERM (the CLI); tests stop the handle themselves. */
  handleSignals?: boolean;
}

export async function runAppliance(o: RunOptions): Promise<ApplianceHandle> {
  const config = await loadConfig(o.dataDir);
  const credential = await loadCredential(o.dataDir);
  const logger = createLogger(o.logLevel ?? config.logLevel, { appliance: config.name });
  const handle = await startAppliance({ config, credential, dataDir: o.dataDir, log: logFn(logger) });
  if (o.handleSignals) {
    const stop = (signal: string) => {
      logger.info({ signal }, 'stopping');
      void handle.stop().then(() => process.exit(0));
    };
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  }
  return handle;
}
