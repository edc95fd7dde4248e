/**
 * Where a shared library the agent opens with `Deno.dlopen` is looked for: the Debian/Ubuntu
 * multiarch directories, the lib64 ones, then the bare name for the dynamic loader's own search.
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
