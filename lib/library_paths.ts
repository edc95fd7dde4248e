/**
 * Where a shared library the agent opens with `Deno.dlopen` is looked for (the Debian/Ubuntu
 * multiarch directories, the lib64 ones, then the bare name for the dynamic loader's own search),
 * and opening the first that loads.
 *
 * @module
 */

const ARCHITECTURES = [
  "x86_64-linux-gnu",
  "aarch64-linux-gnu",
  "arm-linux-gnueabihf",
  "powerpc64le-linux-gnu",
  "s390x-linux-gnu",
  "riscv64-linux-gnu",
] as const;

/**
 * The paths tried, in order, for the library file `name`.
 *
 * @example
 * ```ts
 * import { libraryPaths } from "./library_paths.ts";
 * libraryPaths("libmnl.so.0")[0]; // "/usr/lib/x86_64-linux-gnu/libmnl.so.0"
 * ```
 */
export function libraryPaths(name: string): readonly string[] {
  return ARCHITECTURES.flatMap((arch) => [`/usr/lib/${arch}/${name}`, `/lib/${arch}/${name}`])
    .concat([`/usr/lib64/${name}`, `/usr/lib/${name}`, `/lib64/${name}`, name]);
}

/** Result of {@link openLibrary}. */
export type OpenedLibrary<S extends Deno.ForeignLibraryInterface> =
  | {
    /** Loaded. */
    readonly kind: "ok";
    /** The library; close it when done. */
    readonly library: Deno.DynamicLibrary<S>;
  }
  | {
    /** No path loaded. */
    readonly kind: "missing";
    /** Whether Deno refused FFI (`--allow-ffi` not granted) rather than the file being absent. */
    readonly denied: boolean;
  };

/**
 * Opens the first of `paths` that loads with `symbols`. A path-scoped `--allow-ffi` may still
 * grant a later path, so a refusal does not end the search; it is remembered for the answer.
 *
 * @example
 * ```ts
 * import { libraryPaths, openLibrary } from "./library_paths.ts";
 * const opened = openLibrary(libraryPaths("libmnl.so.0"), {
 *   mnl_socket_open: { parameters: ["i32"], result: "pointer" },
 * });
 * if (opened.kind === "ok") opened.library.close();
 * ```
 */
export function openLibrary<S extends Deno.ForeignLibraryInterface>(
  paths: readonly string[],
  symbols: S,
): OpenedLibrary<S> {
  let denied = false;
  for (const path of paths) {
    try {
      return { kind: "ok", library: Deno.dlopen(path, symbols) };
    } catch (error) {
      // Otherwise not at this path (or not loadable): try the next one.
      if (isPermissionError(error)) denied = true;
    }
  }
  return { kind: "missing", denied };
}

/** Whether `error` is Deno refusing a permission. */
export function isPermissionError(error: unknown): boolean {
  return error instanceof Deno.errors.NotCapable || error instanceof Deno.errors.PermissionDenied;
}
