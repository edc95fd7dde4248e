/**
 * Registering tests that need root: ignored, with the reason in the output, when not root; run
 * (and failing) under `CI=true`, so a CI that lost root never passes silently.
 *
 * @module
 */

const isRoot = Deno.uid() === 0;
const inCi = Deno.env.get("CI") === "true";

/** Registers `fn` as a test that needs root; its name should say "(root)" or "(root, netns)". */
export function rootTest(name: string, fn: () => Promise<void>): void {
  if (!isRoot && !inCi) console.warn(`ignored, needs root: ${name}`);
  Deno.test({
    name,
    ignore: !isRoot && !inCi,
    fn: async () => {
      if (!isRoot) throw new Error(`Cannot run "${name}" as uid ${Deno.uid()}: needs root`);
      await fn();
    },
  });
}
