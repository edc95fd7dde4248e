/**
 * What a machine needs for the namespace tests: root, and the network programs.
 *
 * @module
 */

/**
 * What this machine lacks for the namespace tests, one short phrase each; empty when ready.
 * Checks root and the programs on `PATH` without running anything.
 */
export function missingPrerequisites(): readonly string[] {
  const missing: string[] = [];
  const root = isRoot();
  if (root === "unknown") missing.push("the --allow-sys=uid permission (to check for root)");
  else if (!root) missing.push("root");
  const path = (Deno.env.get("PATH") ?? "").split(":").filter((d) => d !== "");
  const programs = ["ip", "conntrack", "iptables-restore", "ip6tables-restore", "nft", "sysctl"];
  const absent = programs.filter((p) => !path.some((dir) => isExecutable(`${dir}/${p}`)));
  if (absent.length > 0) {
    missing.push(
      `programs ${absent.join(", ")} (apt-get install iproute2 conntrack iptables nftables procps)`,
    );
  }
  return missing;
}

/** Whether this process runs as root; `unknown` without the permission to ask. */
function isRoot(): boolean | "unknown" {
  try {
    return Deno.uid() === 0;
  } catch {
    // Deno forbids reading /proc/self without --allow-all, so the uid is all there is.
    return "unknown";
  }
}

function isExecutable(path: string): boolean {
  try {
    const info = Deno.statSync(path);
    return info.isFile && ((info.mode ?? 0) & 0o111) !== 0;
  } catch {
    return false;
  }
}
