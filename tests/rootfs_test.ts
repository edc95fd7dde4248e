/**
 * The image's file list (`deploy/rootfs.sh`, which the Dockerfile runs), checked without Docker:
 * the same script stages its files over an approximation of gcr.io/distroless/cc-debian12 (the
 * installed files of the Debian packages it is built from), and every program is then run in
 * that root with `chroot`, read-only, as `readOnlyRootFilesystem` would have it.
 *
 * No `deno compile` binary can be built here (no `denort` download), so the Deno binary running
 * this test stands in for it at the same path, running the `deno bundle` of main.ts with the
 * permission flags of `deno.json`'s start task: the same runtime and the same shared libraries.
 *
 * Needs root (chroot, mounts, network namespaces); ignored otherwise, failing instead under
 * `CI=true`.
 *
 * @module
 */
import assert from "node:assert/strict";
import { runToEnd } from "../lib/seams/spawn.ts";
import { runChecked } from "./support/run_checked.ts";
import type { CommandOutput } from "../lib/seams/spawn.ts";
import { denoSpawn } from "../lib/seams/spawn_deno.ts";
import { startTaskArgv } from "./e2e/testbed.ts";
import { VERSION } from "../lib/version.ts";

const ROOT = new URL("..", import.meta.url).pathname.replace(/\/$/, "");
const SCRIPT = `${ROOT}/deploy/rootfs.sh`;
/** Where rootfs.sh puts the agent, and where the image's ENTRYPOINT points. */
const AGENT = "/usr/local/bin/conntrack-cleaner";
/** Where this test puts the bundled entry point inside the root. */
const BUNDLE = "/opt/conntrack-cleaner/main.js";
/** The distroless image's PATH. */
const IMAGE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const PROGRAMS = [
  "bash",
  "chroot",
  "unshare",
  "mount",
  "ip",
  "ldd",
  "ldconfig",
  "dpkg-query",
  "conntrack",
  "iptables",
  "iptables-save",
  "ip6tables-save",
  "iptables-legacy",
  "iptables-legacy-save",
  "ip6tables-legacy-save",
  "nft",
];

function missingPrerequisites(): readonly string[] {
  const missing: string[] = [];
  try {
    if (Deno.uid() !== 0) missing.push("root");
  } catch {
    missing.push("the --allow-sys permission (to check for root)");
  }
  const path = (Deno.env.get("PATH") ?? "").split(":").filter((d) => d !== "");
  const absent = PROGRAMS.filter((p) =>
    !path.some((dir) => {
      try {
        return Deno.statSync(`${dir}/${p}`).isFile;
      } catch {
        return false;
      }
    })
  );
  if (absent.length > 0) {
    missing.push(`programs ${absent.join(", ")} (apt-get install conntrack iptables nftables)`);
  }
  return missing;
}

async function run(program: string, args: readonly string[]): Promise<CommandOutput> {
  return await runToEnd(denoSpawn, program, args);
}

function mustRun(program: string, args: readonly string[]): Promise<string> {
  return runChecked(denoSpawn, program, args);
}

/**
 * Copies the files of the base image's Debian packages, as `dpkg` lists them, into `root`.
 * Directories stay directories even where this host merges /usr (distroless/debian12 does not),
 * so the staged files meet the same layout as in the image.
 */
async function installBase(root: string): Promise<void> {
  const packages = (await mustRun(SCRIPT, ["--base-packages"])).split("\n").filter(Boolean);
  const listed = await mustRun("dpkg-query", ["-L", ...packages]);
  const paths = [...new Set(listed.split("\n").filter((p) => p.startsWith("/") && p !== "/."))];
  for (const path of paths.sort()) {
    const target = `${root}${path}`;
    let info: Deno.FileInfo | undefined;
    try {
      info = await Deno.stat(path);
    } catch (error) {
      // A file diverted or removed after installation is not there to copy.
      if (error instanceof Deno.errors.NotFound) continue;
      // Deno refuses /proc, /dev and /sys without --allow-all; packages list only the
      // directories themselves there (mount points).
      if (!(error instanceof Deno.errors.NotCapable)) throw error;
      await Deno.mkdir(target, { recursive: true });
      continue;
    }
    if (info.isDirectory) {
      await Deno.mkdir(target, { recursive: true });
      continue;
    }
    await Deno.mkdir(target.slice(0, target.lastIndexOf("/")), { recursive: true });
    const link = await Deno.lstat(path).catch(() => undefined);
    if (link?.isSymlink) {
      await Deno.symlink(await Deno.readLink(path), target).catch(() => {});
    } else if (info.isFile) {
      await Deno.copyFile(path, target);
    }
  }
  // What distroless adds beside the packages: users, /tmp; no shell, no package manager.
  await Deno.writeTextFile(
    `${root}/etc/passwd`,
    "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n",
  );
  await Deno.writeTextFile(`${root}/etc/group`, "root:x:0:\nnonroot:x:65532:\n");
  await Deno.mkdir(`${root}/tmp`, { recursive: true });
  await Deno.chmod(`${root}/tmp`, 0o1777);
}

/** Copies a staged tree over the root, as the Dockerfile's `COPY --from=rootfs /staging/ /`. */
async function overlay(stage: string, root: string): Promise<void> {
  await mustRun("cp", ["-a", `${stage}/.`, `${root}/`]);
}

/**
 * Runs `argv` in `root` the way a container runtime would: its own mount namespace,
 * the root read-only, a fresh /proc, a minimal /dev, and only the image's PATH in the
 * environment. `netns` runs it in that network namespace.
 */
async function inRoot(
  root: string,
  argv: readonly string[],
  options: { netns?: string; signal?: AbortSignal } = {},
): Promise<CommandOutput> {
  const setup = [
    'r="$1"; shift',
    'mount --bind "$r" "$r"',
    'mount -o remount,ro,bind "$r"',
    'mount -t proc proc "$r/proc"',
    'mount -t tmpfs -o mode=755,size=64k tmpfs "$r/dev"',
    'for d in null zero random urandom; do : > "$r/dev/$d"; mount --bind "/dev/$d" "$r/dev/$d"; done',
    'exec chroot "$r" "$@"',
  ].join(" && ");
  const command = [
    ...(options.netns ? ["ip", "netns", "exec", options.netns] : []),
    "env",
    "-i",
    `PATH=${IMAGE_PATH}`,
    // Only `deno run` needs a cache directory; it stays unwritable, like the rest of the root.
    "DENO_DIR=/tmp/deno",
    // No --fork: every step execs the next, so the agent keeps this PID and gets the SIGTERM
    // that aborting sends (a forking unshare would block it).
    "unshare",
    "--mount",
    "sh",
    "-c",
    setup,
    "sh",
    root,
    ...argv,
  ];
  const [program = "", ...args] = command;
  return await runToEnd(
    denoSpawn,
    program,
    args,
    options.signal ? { signal: options.signal } : {},
  );
}

/** The agent's argv in the root: the start task's permission flags, then `args`. */
async function agentArgv(args: readonly string[]): Promise<readonly string[]> {
  const config = JSON.parse(await Deno.readTextFile(`${ROOT}/deno.json`)) as {
    tasks?: Record<string, string>;
  };
  const argv = startTaskArgv(config.tasks?.["start"] ?? "", ROOT, AGENT);
  const flags = argv.slice(2, -1).filter((flag, i, all) =>
    flag !== "--config" && all[i - 1] !== "--config"
  );
  return [AGENT, "run", ...flags, BUNDLE, ...args];
}

/** The real ELF of the running Deno (not an npm shim script). */
async function denoElf(): Promise<string> {
  const path = Deno.execPath();
  const head = new Uint8Array(4);
  const file = await Deno.open(path);
  try {
    await file.read(head);
  } finally {
    file.close();
  }
  assert.deepEqual([...head], [0x7f, 0x45, 0x4c, 0x46], `${path} is not an ELF binary`);
  return path;
}

/** A throwaway network namespace with one stale entry to a VIP that the node now DNATs. */
async function withStaleEntry(fn: (ns: string) => Promise<void>): Promise<void> {
  const ns = `ccf-rootfs-${crypto.randomUUID().slice(0, 8)}`;
  await mustRun("ip", ["netns", "add", ns]);
  try {
    const exec = ["netns", "exec", ns];
    await mustRun("ip", [
      ...exec,
      ..."conntrack -I -p tcp -s 198.51.100.2 -d 192.0.2.10 --sport 40000 --dport 80".split(" "),
      ..."--state SYN_SENT -t 117 -u UNSET".split(" "),
    ]);
    // Matches and a target that iptables-save can only print with its extensions loaded.
    await mustRun("ip", [
      ...exec,
      ..."iptables -t nat -A PREROUTING -d 192.0.2.10/32 -p tcp --dport 80".split(" "),
      ..."-m comment --comment default/web -j DNAT --to-destination 203.0.113.5:8080".split(" "),
    ]);
    await fn(ns);
  } finally {
    await run("ip", ["netns", "del", ns]);
  }
}

async function entries(ns: string): Promise<string> {
  return await mustRun("ip", ["netns", "exec", ns, "conntrack", "-L"]);
}

/** Moves `path` aside for the duration of `fn`. */
async function without(path: string, fn: () => Promise<void>): Promise<void> {
  const aside = `${path}.aside`;
  await Deno.rename(path, aside);
  try {
    await fn();
  } finally {
    await Deno.rename(aside, path);
  }
}

const missing = missingPrerequisites();
const inCi = Deno.env.get("CI") === "true";
const ignore = missing.length > 0 && !inCi;

Deno.test({
  name: `rootfs (root, chroot): deploy/rootfs.sh on distroless cc-debian12 runs the agent${
    ignore ? ` (ignored: needs ${missing.join("; ")})` : ""
  }`,
  ignore,
  fn: async (t) => {
    if (missing.length > 0) {
      throw new Error(`Cannot assemble the image root under CI as this runner lacks: ${missing}`);
    }
    const work = await Deno.makeTempDir({ prefix: "ccf-rootfs-" });
    try {
      const root = `${work}/root`;
      const stage = `${work}/stage`;
      await installBase(root);
      const listed = await mustRun(SCRIPT, ["--agent", await denoElf(), stage]);
      await mustRun(Deno.execPath(), [
        "bundle",
        "--quiet",
        "--config",
        `${ROOT}/deno.json`,
        "--platform",
        "deno",
        "-o",
        `${root}${BUNDLE}`,
        `${ROOT}/main.ts`,
      ]);

      await t.step(
        "the staged files all live under /usr, so they copy over distroless",
        async () => {
          const top = [];
          for await (const entry of Deno.readDir(stage)) top.push(entry.name);
          assert.deepEqual(top, ["usr"]);
          assert.ok(listed.split("\n").includes(AGENT.slice(1)), "the agent was not staged");
        },
      );
      await overlay(stage, root);

      await t.step(
        "conntrack, both iptables flavours' save programs and nft run in the root",
        async () => {
          for (
            const program of [
              "conntrack",
              "iptables-save",
              "ip6tables-save",
              "iptables-legacy-save",
              "ip6tables-legacy-save",
              "nft",
            ]
          ) {
            const host = await run(program, ["--version"]);
            const image = await inRoot(root, [program, "--version"]);
            assert.equal(image.code, 0, `${program} in the root: ${image.stderr.trim()}`);
            assert.equal(image.stdout + image.stderr, host.stdout + host.stderr);
          }
        },
      );

      await t.step("a library the script did not collect makes conntrack fail", async () => {
        const hostLibs = await mustRun("ldd", [
          await mustRun("bash", ["-c", "command -v conntrack"])
            .then((p) => p.trim()),
        ]);
        const staged = listed.split("\n").filter((p) => /\.so[.0-9]*$/.test(p));
        const lib = staged.find((p) => hostLibs.includes(p.slice(p.lastIndexOf("/") + 1)));
        assert.ok(lib, "none of conntrack's libraries was staged");
        await without(`${root}/${lib}`, async () => {
          const out = await inRoot(root, ["conntrack", "--version"]);
          assert.notEqual(out.code, 0);
          assert.match(out.stderr, /error while loading shared libraries/);
          assert.ok(out.stderr.includes(lib.slice(lib.lastIndexOf("/") + 1)), out.stderr);
        });
      });

      await withStaleEntry(async (ns) => {
        await t.step(
          "iptables-save prints the DNAT rule, with the extensions it needs",
          async () => {
            const out = await inRoot(root, ["iptables-save", "-t", "nat"], { netns: ns });
            assert.equal(out.code, 0, out.stderr);
            assert.match(out.stdout, /-j DNAT --to-destination 203\.0\.113\.5:8080/);
            const xtables = staged(listed, /\/xtables\/[^/]+\.so$/)[0] ?? "";
            assert.ok(xtables !== "", "no iptables extension was staged");
            await without(`${root}/${xtables.slice(0, xtables.lastIndexOf("/"))}`, async () => {
              const bare = await inRoot(root, ["iptables-save", "-t", "nat"], { netns: ns });
              assert.notEqual(bare.code, 0, "iptables-save printed the rule without extensions");
            });
          },
        );

        await t.step("--version names the agent, Deno and conntrack", async () => {
          const out = await inRoot(root, await agentArgv(["--version"]), { netns: ns });
          assert.equal(out.code, 0, out.stderr);
          const conntrack = (await mustRun("conntrack", ["--version"])).match(/v(\d\S*)/)?.[1];
          assert.deepEqual(out.stdout.trim().split("\n"), [
            `conntrack-cleaner ${VERSION}`,
            `deno ${Deno.version.deno}`,
            `conntrack ${conntrack}`,
          ]);
        });

        await t.step("scan lists the stale entry for deletion and deletes nothing", async () => {
          const out = await inRoot(root, await agentArgv(["scan", "--json"]), { netns: ns });
          assert.equal(out.code, 0, out.stderr);
          const rows = out.stdout.trim().split("\n").map((l) => JSON.parse(l));
          assert.equal(rows.length, 1, out.stdout);
          assert.equal(rows[0].sport, 40000);
          assert.equal(rows[0].verdict, "delete");
          assert.equal(rows[0].rule, "nat");
          assert.match(await entries(ns), /sport=40000/);
        });

        await t.step("the agent deletes the stale entry through netlink", async () => {
          const controller = new AbortController();
          const argv = await agentArgv(["--log-format", "json", "--metrics-address", ""]);
          const running = inRoot(root, argv, { netns: ns, signal: controller.signal });
          const deadline = Date.now() + 15_000;
          while (/sport=40000/.test(await entries(ns)) && Date.now() < deadline) {
            await new Promise((resolve) => setTimeout(resolve, 200));
          }
          controller.abort();
          const out = await running;
          assert.doesNotMatch(await entries(ns), /sport=40000/, out.stdout + out.stderr);
          // Logs go to stderr, one JSON object a line.
          const deleted = (out.stdout + out.stderr).split("\n")
            .filter((l) => l.includes('"deleted stale flow"'))
            .map((l) => JSON.parse(l));
          assert.equal(deleted.length, 1, out.stdout + out.stderr);
          assert.equal(deleted[0].backend, "netlink");
        });

        await t.step(
          "iptables-legacy-save prints a rule kube-proxy wrote in legacy mode",
          async () => {
            await mustRun("ip", [
              ..."netns exec".split(" "),
              ns,
              ..."iptables-legacy -t nat -A PREROUTING -d 192.0.2.11/32 -p tcp --dport 80".split(
                " ",
              ),
              ..."-m comment --comment default/legacy -j DNAT --to-destination 203.0.113.6:8080"
                .split(" "),
            ]);
            const out = await inRoot(root, ["iptables-legacy-save", "-t", "nat"], { netns: ns });
            assert.equal(out.code, 0, out.stderr);
            assert.match(
              out.stdout,
              /-d 192\.0\.2\.11\/32 .*-j DNAT --to-destination 203\.0\.113\.6:8080/,
            );
          },
        );
      });
    } finally {
      await Deno.remove(work, { recursive: true });
    }
  },
});

function staged(listed: string, pattern: RegExp): readonly string[] {
  return listed.split("\n").filter((p) => pattern.test(p));
}

Deno.test("Dockerfile: the image is the pinned base plus what rootfs.sh staged", async () => {
  const text = await Deno.readTextFile(`${ROOT}/Dockerfile`);
  // The compile stage uses the Deno this project is developed and tested with.
  assert.match(
    text,
    new RegExp(`^ARG DENO_VERSION=${Deno.version.deno.replaceAll(".", "\\.")}$`, "m"),
  );
  assert.match(text, new RegExp(`^ARG VERSION=${VERSION.replaceAll(".", "\\.")}$`, "m"));
  assert.match(text, /^ARG BASE_IMAGE=gcr\.io\/distroless\/cc-debian12:\S+$/m);
  assert.match(text, /^RUN \/usr\/local\/sbin\/rootfs\.sh --agent \S+ \/staging$/m);
  const final = text.slice(text.lastIndexOf("\nFROM "));
  assert.match(final, /^\nFROM \$\{BASE_IMAGE\}\n/);
  // One COPY, of the staged tree; no RUN (the base has no shell to run it with).
  assert.deepEqual(final.match(/^(COPY|ADD|RUN)\b.*$/gm), ["COPY --from=rootfs /staging/ /"]);
  assert.match(final, new RegExp(`^ENTRYPOINT \\["${AGENT}"\\]$`, "m"));
});
