/**
 * The logging seam: the agent logs through this narrow interface, which a LogTape logger
 * satisfies and which tests replace with a recorder.
 *
 * @module
 */

/** Log output format: JSON lines for collectors, or readable text for people. */
export type LogFormat = "json" | "text";
/** Lowest log level written. */
export type LogLevel = "debug" | "info" | "warning" | "error";

/** Structured properties attached to a log record. */
export type LogProperties = Readonly<Record<string, unknown>>;

/** A structured logger. Messages are constant text; variable parts go in `properties`. */
export interface Logger {
  /** Detail useful when debugging the agent itself. */
  debug(message: string, properties?: LogProperties): void;
  /** Something an operator wants on record, such as a deletion. */
  info(message: string, properties?: LogProperties): void;
  /** Something went wrong at run time; the agent goes on. */
  warn(message: string, properties?: LogProperties): void;
  /** Something failed that needs an operator. */
  error(message: string, properties?: LogProperties): void;
}

/** A logger that drops everything, for commands and tests that do not look at logs. */
export const silentLogger: Logger = {
  debug: () => {},
  info: () => {},
  warn: () => {},
  error: () => {},
};
