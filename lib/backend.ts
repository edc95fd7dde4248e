/**
 * Choosing the deletion backend: netlink through FFI when it can be had, else the conntrack CLI.
 *
 * @module
 */
import type { SpawnCommand } from "./command.ts";
import type { DeleteBackend } from "./config.ts";
import { createCliDeleter } from "./conntrack.ts";
import type { Deleter } from "./deleter.ts";
import type { Logger } from "./log.ts";
import type { NetlinkOpen } from "./netlink.ts";

/** The backend could not be had, though the operator asked for it by name. */
export class BackendUnavailableError extends Error {
  /** Builds the one-line message. */
  constructor(reason: string) {
    super(
      `Cannot use --delete-backend netlink (CONNTRACK_CLEANER_DELETE_BACKEND): ${reason}; ` +
        `use "cli" or "auto"`,
    );
    this.name = "BackendUnavailableError";
  }
}

/** What the choice needs. */
export interface BackendOptions {
  /** What the operator asked for. */
  readonly backend: DeleteBackend;
  /** The conntrack program, for the CLI backend. */
  readonly conntrack: string;
  /** Starts conntrack. */
  readonly spawn: SpawnCommand;
  /** Opens the netlink backend (injected so tests need no library). */
  readonly openNetlink: () => NetlinkOpen;
  /** Says once which backend was chosen and why. */
  readonly logger: Logger;
}

/**
 * Returns the deleter to use. `auto` prefers netlink (one request per flow, no table dump) and
 * falls back to `conntrack -R -`, saying so once; `netlink` without the library or the
 * `--allow-ffi` permission throws {@link BackendUnavailableError}.
 */
export function selectDeleter(options: BackendOptions): Deleter {
  const cli = () => createCliDeleter(options.spawn, options.conntrack);
  if (options.backend === "cli") return cli();
  const opened = options.openNetlink();
  if (opened.kind === "ok") {
    options.logger.info("deleting through netlink", { backend: "netlink" });
    return opened.deleter;
  }
  if (options.backend === "netlink") throw new BackendUnavailableError(opened.reason);
  options.logger.info("netlink deletion unavailable; deleting through conntrack -R", {
    backend: "cli",
    reason: opened.reason,
  });
  return cli();
}
