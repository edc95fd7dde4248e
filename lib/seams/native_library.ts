/**
 * Where a shared library the agent opens with `Deno.dlopen` is looked for (the Debian/Ubuntu
 * multiarch directories, the lib64 ones, then the bare name for the dynamic loader's own search),
 * and opening the first that loads.
 *
 * @module
 */
import { errorLine } from "./message_line.ts";

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
 * import { libraryPaths } from "./native_library.ts";
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
    /** The path it was opened by. */
    readonly path: string;
  }
  | {
    /** No path held a file to load. */
    readonly kind: "missing";
    /** Whether Deno refused FFI (`--allow-ffi` not granted) rather than the file being absent. */
    readonly denied: boolean;
  }
  | {
    /** A file was found but could not be used: not a library, or not the one wanted. */
    readonly kind: "unusable";
    /** Where it was found (the loader's own path, when it reports one). */
    readonly path: string;
    /** What is wrong, e.g. `missing symbol mnl_socket_open` or `cannot load: file too short`. */
    readonly problem: string;
    /** Whether Deno also refused FFI for some other path. */
    readonly denied: boolean;
  };

/**
 * Opens the first of `paths` that loads with `symbols`. A path-scoped `--allow-ffi` may still
 * grant a later path, so a refusal does not end the search; it is remembered for the answer. A
 * file that is there but cannot be used (not a shared library, or one without a symbol in
 * `symbols`) does not end it either, but it is what the answer reports when nothing loads, since
 * "not found" would send the operator looking in the wrong place. Read the answer with
 * {@link describeUnavailable}.
 *
 * @example
 * ```ts
 * import { libraryPaths, openLibrary } from "./native_library.ts";
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
  let unusable: { readonly path: string; readonly problem: string } | undefined;
  for (const path of paths) {
    try {
      return { kind: "ok", library: Deno.dlopen(path, symbols), path };
    } catch (error) {
      // Otherwise not at this path, or not loadable: try the next one.
      if (isPermissionError(error)) denied = true;
      else unusable ??= loadProblem(path, error);
    }
  }
  return unusable ? { kind: "unusable", ...unusable, denied } : { kind: "missing", denied };
}

/**
 * What is wrong with a file `Deno.dlopen` could not use, or `undefined` when there was no file.
 * Deno reports both as an `Error` whose message carries the loader's (`dlerror`) text, so the
 * text is all there is to go by: "No such file or directory" means nothing is there (for a bare
 * name, nowhere the loader looks); "undefined symbol: X" that the file loaded but lacks X, with
 * the path the loader resolved; anything else that the file is there but does not load.
 */
function loadProblem(
  path: string,
  error: unknown,
): { readonly path: string; readonly problem: string } | undefined {
  const message = error instanceof Error ? error.message : String(error);
  if (/No such file or directory/.test(message)) return undefined;
  const missing = /(?:^|: )([^:]+): undefined symbol: (\S+)/.exec(message);
  if (missing) return { path: missing[1] ?? path, problem: `missing symbol ${missing[2]}` };
  // "Could not open library: Could not open library: /x/libmnl.so.0: file too short"
  const reason = message.split(`${path}: `).at(-1)?.trim() || message;
  return { path, problem: `cannot load: ${errorLine(reason)}` };
}

/**
 * One line saying why the library `name` could not be had, for a backend's "unavailable" reason:
 * `--allow-ffi not granted`, `libmnl.so.0 not found`, or, when a file was there but could not be
 * used, `libmnl.so.0 found at /usr/lib/libmnl.so.0 but is not a usable libmnl.so.0: missing
 * symbol mnl_socket_open`.
 *
 * @example
 * ```ts
 * import { describeUnavailable } from "./native_library.ts";
 * describeUnavailable("libmnl.so.0", { kind: "missing", denied: false }); // "libmnl.so.0 not found"
 * describeUnavailable("libmnl.so.0", {
 *   kind: "unusable",
 *   path: "/tmp/libmnl.so.0",
 *   problem: "cannot load: file too short",
 *   denied: false,
 * }); // "libmnl.so.0 found at /tmp/libmnl.so.0 but is not a usable libmnl.so.0: cannot load: file too short"
 * ```
 */
export function describeUnavailable(
  name: string,
  opened: Exclude<OpenedLibrary<Deno.ForeignLibraryInterface>, { readonly kind: "ok" }>,
): string {
  if (opened.kind === "unusable") {
    return `${name} found at ${opened.path} but is not a usable ${name}: ${opened.problem}`;
  }
  return opened.denied ? "--allow-ffi not granted" : `${name} not found`;
}

/** Whether `error` is Deno refusing a permission. */
function isPermissionError(error: unknown): boolean {
  return error instanceof Deno.errors.NotCapable || error instanceof Deno.errors.PermissionDenied;
}
