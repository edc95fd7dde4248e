/**
 * Choosing the listing and deletion backends: netlink through FFI when it can be had, else the
 * conntrack CLI.
 *
 * @module
 */
import type { SpawnCommand } from "../seams/spawn.ts";
import { createCliDeleter, createCliLister } from "./conntrack_cli.ts";
import type { Deleter } from "./deleter.ts";
import type { Lister } from "./lister.ts";
import type { Logger } from "../seams/logger.ts";
import type { NetlinkOpen } from "./netlink/netlink_deleter.ts";
import type { NetlinkListerOpen } from "./netlink/netlink_lister.ts";

/** How the table is listed and flows are deleted: netlink through FFI, or the conntrack CLI. */
export type Backend = "auto" | "netlink" | "cli";

/** The backend could not be had, though the operator asked for it by name. */
export class BackendUnavailableError extends Error {
  /**
   * Builds the one-line message.
   * @param option The option that asked for netlink, e.g. `--delete-backend`.
   * @param variable Its environment variable.
   * @param reason Why netlink cannot be used.
   */
  constructor(option: string, variable: string, reason: string) {
    super(`Cannot use ${option} netlink (${variable}): ${reason}; use "cli" or "auto"`);
    this.name = "BackendUnavailableError";
  }
}

/** What the choice needs. */
export interface BackendOptions {
  /** What the operator asked for. */
  readonly backend: Backend;
  /** The conntrack program, for the CLI backend. */
  readonly conntrack: string;
  /** Starts conntrack. */
  readonly spawn: SpawnCommand;
  /** Says once which backend was chosen and why. */
  readonly logger: Logger;
}

/**
 * Returns the deleter to use. `auto` prefers netlink (a GET and an exact DELETE per flow,
 * batched, through libmnl: no table dump) and falls back to `conntrack -R -`, saying so once;
 * `netlink` without libmnl or the `--allow-ffi` permission throws
 * {@link BackendUnavailableError}.
 *
 * @param openNetlink Opens the netlink backend (injected so tests need no library).
 */
export function selectDeleter(
  options: BackendOptions,
  openNetlink: () => NetlinkOpen,
): Deleter {
  return choose(options, {
    option: "--delete-backend",
    variable: "CONNTRACK_CLEANER_DELETE_BACKEND",
    what: "deleting",
    cliName: "conntrack -R",
    open: () => {
      const opened = openNetlink();
      return opened.kind === "ok" ? { kind: "ok", backend: opened.deleter } : opened;
    },
    cli: () => createCliDeleter(options.spawn, options.conntrack),
  });
}

/**
 * Returns the lister to use. `auto` prefers netlink (a ctnetlink dump of our own: no conntrack
 * process, no text) and falls back to `conntrack -L`, saying so once; `netlink` without libmnl
 * or the `--allow-ffi` permission throws {@link BackendUnavailableError}.
 *
 * @param openNetlink Opens the netlink backend (injected so tests need no library).
 */
export function selectLister(
  options: BackendOptions,
  openNetlink: () => NetlinkListerOpen,
): Lister {
  return choose(options, {
    option: "--list-backend",
    variable: "CONNTRACK_CLEANER_LIST_BACKEND",
    what: "listing",
    cliName: "conntrack -L",
    open: () => {
      const opened = openNetlink();
      return opened.kind === "ok" ? { kind: "ok", backend: opened.lister } : opened;
    },
    cli: () => createCliLister(options.spawn, options.conntrack),
  });
}

/** How one kind of backend is named and made. */
interface Choice<T> {
  readonly option: string;
  readonly variable: string;
  /** `deleting` or `listing`, for the log line. */
  readonly what: string;
  /** The CLI command the fallback runs, for the log line. */
  readonly cliName: string;
  readonly open: () =>
    | { readonly kind: "ok"; readonly backend: T }
    | { readonly kind: "unavailable"; readonly reason: string };
  readonly cli: () => T;
}

function choose<T>(options: BackendOptions, choice: Choice<T>): T {
  if (options.backend === "cli") return choice.cli();
  const opened = choice.open();
  if (opened.kind === "ok") {
    options.logger.info(`${choice.what} through netlink`, { backend: "netlink" });
    return opened.backend;
  }
  if (options.backend === "netlink") {
    throw new BackendUnavailableError(choice.option, choice.variable, opened.reason);
  }
  options.logger.info(
    `netlink ${choice.what} unavailable; ${choice.what} through ${choice.cliName}`,
    {
      backend: "cli",
      reason: opened.reason,
    },
  );
  return choice.cli();
}
