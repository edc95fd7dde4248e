import assert from "node:assert/strict";
import type { Candidate, Flow } from "../lib/core/flow.ts";
import { flowKey } from "../lib/core/flow.ts";
import type { ParsedLine } from "../lib/table/text/tokenizer.ts";
import { OTHER_LINE, tokenizeLine, tokenizeLineByFields } from "../lib/table/text/tokenizer.ts";
import { tokenizeAnyForm } from "./support/save_line.ts";

const FIXTURES = new URL("./fixtures/", import.meta.url);

/** The lines of a fixture, `\r` kept: the tokenizer must cope with what a reader hands it. */
function fixtureLines(name: string): string[] {
  return Deno.readTextFileSync(new URL(name, FIXTURES)).split("\n");
}

/** What the test expects of one candidate; the reply tuple defaults to the mirror. */
interface Expect {
  readonly from: string;
  readonly to: string;
  readonly timeout: number;
  readonly replyFrom?: string;
  readonly zone?: number;
  readonly origZone?: number;
  readonly replyZone?: number;
  readonly deltaTime?: number;
  readonly id?: number;
}

/** Splits `198.51.100.2:40000` or `[2001:db8::2]:40200`. */
function endpoint(text: string): { address: string; port: number } {
  const colon = text.lastIndexOf(":");
  return {
    address: text.slice(0, colon).replace(/^\[|\]$/g, ""),
    port: Number(text.slice(colon + 1)),
  };
}

function candidate(e: Expect): Candidate {
  const from = endpoint(e.from);
  const to = endpoint(e.to);
  const replyFrom = endpoint(e.replyFrom ?? e.to);
  const flow: Flow = {
    family: from.address.includes(":") ? "ipv6" : "ipv4",
    original: { src: from.address, dst: to.address, sport: from.port, dport: to.port },
    reply: { src: replyFrom.address, dst: from.address, sport: replyFrom.port, dport: from.port },
    zone: e.zone ?? 0,
    ...(e.origZone === undefined ? {} : { origZone: e.origZone }),
    ...(e.replyZone === undefined ? {} : { replyZone: e.replyZone }),
  };
  return {
    flow,
    key: flowKey(flow),
    timeout: e.timeout,
    ...(e.deltaTime === undefined ? {} : { deltaTime: e.deltaTime }),
    ...(e.id === undefined ? {} : { id: e.id }),
  };
}

function parseFixture(name: string): { candidates: Candidate[]; malformed: string[] } {
  const candidates: Candidate[] = [];
  const malformed: string[] = [];
  for (const line of fixtureLines(name)) {
    // The save-form fixtures are read with the tests' own save grammar; every other line goes
    // through the agent's tokenizer.
    const parsed = tokenizeAnyForm(line);
    if (parsed.kind === "candidate") candidates.push(parsed.candidate);
    if (parsed.kind === "malformed") malformed.push(`${parsed.reason}: ${line}`);
  }
  return { candidates, malformed };
}

const V4_A = "198.51.100.2:40000";
const V4_B = "198.51.100.8:40100";
const V6_A = "[2001:db8::2]:40200";
const VIP4 = "192.0.2.10:80";
const VIP4_B = "192.0.2.14:80";
const VIP6 = "[2001:db8:100::10]:80";

/** The candidates of the mixed namespace captures, in the order conntrack listed them. */
function namespaceCandidates(deltaTime: number | undefined, withIds: boolean): Candidate[] {
  const entries: [Expect, number][] = [
    [{ from: "198.51.100.23:40023", to: VIP4, timeout: 110, replyZone: 4 }, 2946223645],
    [
      { from: "198.51.100.30:40030", to: VIP4, replyFrom: "203.0.113.5:80", timeout: 112 },
      3363441236,
    ],
    [
      { from: "[2001:db8::9]:40900", to: "[2001:db8:100::10]:443", timeout: 111, zone: 12 },
      3193498732,
    ],
    [
      { from: "[2001:db8::ffff:102:304]:40004", to: "[::ffff:192.0.2.10]:80", timeout: 114 },
      930227716,
    ],
    [{ from: V4_A, to: VIP4, timeout: 116 }, 3020061250],
    [{ from: "198.51.100.22:40022", to: VIP4, timeout: 109, origZone: 3 }, 3016272825],
  ];
  return entries.map(([e, id]) =>
    candidate({
      ...e,
      ...(deltaTime === undefined ? {} : { deltaTime }),
      ...(withIds ? { id } : {}),
    })
  );
}

const FIXTURE_CANDIDATES: Record<string, Candidate[]> = {
  "conntrack-list-plain.txt": [
    candidate({ from: V4_A, to: VIP4, timeout: 116 }),
    candidate({ from: V4_B, to: VIP4_B, timeout: 99, zone: 7 }),
    candidate({ from: V6_A, to: VIP6, timeout: 117 }),
  ],
  "conntrack-list-acct-timestamp.txt": [
    candidate({ from: V4_B, to: VIP4_B, timeout: 99, zone: 7, deltaTime: 0 }),
    candidate({ from: V4_A, to: VIP4, timeout: 116, deltaTime: 1 }),
    candidate({ from: V6_A, to: VIP6, timeout: 117, deltaTime: 0 }),
  ],
  "conntrack-list-extended.txt": [
    candidate({ from: V4_B, to: VIP4_B, timeout: 99, zone: 7, deltaTime: 0 }),
    candidate({ from: V4_A, to: VIP4, timeout: 116, deltaTime: 1 }),
    candidate({ from: V6_A, to: VIP6, timeout: 117, deltaTime: 0 }),
  ],
  "conntrack-list-id.txt": [
    candidate({ from: V4_B, to: VIP4_B, timeout: 99, zone: 7, deltaTime: 1, id: 186304758 }),
    candidate({ from: V4_A, to: VIP4, timeout: 115, deltaTime: 2, id: 2499451965 }),
    candidate({ from: V6_A, to: VIP6, timeout: 116, deltaTime: 1, id: 1383102343 }),
  ],
  "conntrack-list-ktimestamp.txt": [
    candidate({ from: V4_B, to: VIP4_B, timeout: 98, zone: 7, deltaTime: 1 }),
    candidate({ from: V4_A, to: VIP4, timeout: 115, deltaTime: 2 }),
    candidate({ from: V6_A, to: VIP6, timeout: 116, deltaTime: 1 }),
  ],
  "conntrack-list-save.txt": [
    candidate({ from: V4_B, to: VIP4_B, timeout: 98, zone: 7 }),
    candidate({ from: V4_A, to: VIP4, timeout: 115 }),
    candidate({ from: V6_A, to: VIP6, timeout: 116 }),
  ],
  "conntrack-list-stderr-summary.txt": [],
  "conntrack-ns-mixed-plain.txt": namespaceCandidates(0, false),
  "conntrack-ns-mixed-extended-id-ktimestamp.txt": namespaceCandidates(0, true),
  "conntrack-ns-mixed-save.txt": namespaceCandidates(undefined, false),
  "conntrack-ns-unreplied-tcp-id.txt": namespaceCandidates(1, true),
  "conntrack-handmade-rare.txt": [
    candidate({
      from: "198.51.100.40:41000",
      to: "192.0.2.40:8443",
      timeout: 118,
      zone: 9,
      origZone: 5,
      replyZone: 6,
      deltaTime: 42,
      id: 123456789,
    }),
    candidate({
      from: "198.51.100.41:41001",
      to: "192.0.2.40:8443",
      timeout: 117,
      zone: 2,
      deltaTime: 3,
      id: 77,
    }),
    candidate({
      from: "[2001:db8:0:0:0:0:0:2]:40300",
      to: "[2001:db8:100:0:0:0:0:10]:80",
      timeout: 100,
    }),
    candidate({ from: "[::2:3:4:5:6:7:8]:40301", to: "[2001:DB8:1:2:3:4:5::]:80", timeout: 99 }),
    candidate({ from: "198.51.100.42:41002", to: "192.0.2.40:8443", timeout: 50 }),
    candidate({ from: V4_A, to: VIP4, timeout: 116 }),
  ],
};

for (const [name, expected] of Object.entries(FIXTURE_CANDIDATES)) {
  Deno.test(`tokenizeLine() reads ${name} with no malformed line and the exact candidates`, () => {
    const { candidates, malformed } = parseFixture(name);
    assert.deepEqual(malformed, []);
    assert.deepEqual(candidates, expected);
  });
}

Deno.test("tokenizeLine() has a test for every conntrack fixture", () => {
  const names = [...Deno.readDirSync(FIXTURES)]
    .map((entry) => entry.name)
    .filter((name) => name.startsWith("conntrack-") && name !== "conntrack-malformed.txt");
  assert.deepEqual(names.sort(), Object.keys(FIXTURE_CANDIDATES).sort());
});

Deno.test("tokenizeLine() names what is wrong in every malformed line", () => {
  const lines = fixtureLines("conntrack-malformed.txt").filter((l) => l && !l.startsWith("#"));
  assert.ok(lines.length >= 50);
  for (let n = 0; n < lines.length; n += 2) {
    const reason = (lines[n] ?? "").replace(/^== /, "");
    const line = lines[n + 1] ?? "";
    assert.deepEqual(tokenizeAnyForm(line), { kind: "malformed", reason }, line);
  }
});

Deno.test("tokenizeLine() parses an IPv6 SYN_SENT entry", () => {
  const parsed = tokenizeLine(
    "ipv6     10 tcp      6 117 SYN_SENT src=2001:db8::2 dst=2001:db8:100::10 sport=40200 " +
      "dport=80 [UNREPLIED] src=2001:db8:100::10 dst=2001:db8::2 sport=80 dport=40200 mark=0 " +
      "use=1",
  );
  assert.deepEqual(parsed, {
    kind: "candidate",
    candidate: candidate({ from: V6_A, to: VIP6, timeout: 117 }),
  });
});

Deno.test("tokenizeLine() keeps every zone conntrack prints in the flow and its key", () => {
  const line = (zones: string, trailer: string) =>
    `tcp      6 116 SYN_SENT src=198.51.100.2 dst=192.0.2.10 sport=40000 dport=80${zones} ` +
    `[UNREPLIED] src=192.0.2.10 dst=198.51.100.2 sport=80 dport=40000${trailer} mark=0 use=1`;
  const flowOf = (text: string) => {
    const parsed = tokenizeLine(text);
    assert.equal(parsed.kind, "candidate", text);
    return parsed.kind === "candidate" ? parsed.candidate : undefined;
  };
  assert.deepEqual(flowOf(line("", "")), candidate({ from: V4_A, to: VIP4, timeout: 116 }));
  const zoned = flowOf(line(" zone-orig=3", " zone-reply=4"));
  assert.deepEqual(
    [zoned?.flow.zone, zoned?.flow.origZone, zoned?.flow.replyZone, zoned?.key.split(" ")[0]],
    [0, 3, 4, "0/3/4"],
  );
  const all = flowOf(line(" zone-orig=3", " zone-reply=4").replace(" mark=0", " mark=0 zone=5"));
  assert.deepEqual([all?.flow.zone, all?.flow.origZone, all?.flow.replyZone], [5, 3, 4]);
  assert.equal(all?.key.split(" ")[0], "5/3/4");
});

Deno.test("tokenizeLine() reads the fields after a [start=...] that contains spaces", () => {
  const parsed = tokenizeLine(
    "tcp      6 115 SYN_SENT src=198.51.100.2 dst=192.0.2.10 sport=40000 dport=80 [UNREPLIED] " +
      "src=192.0.2.10 dst=198.51.100.2 sport=80 dport=40000 mark=0 delta-time=2 " +
      "[start=Tue Nov 24 22:44:15 2026] [stop=Tue Nov 24 22:46:15 2026] use=1 id=42",
  );
  assert.deepEqual(parsed, {
    kind: "candidate",
    candidate: candidate({ from: V4_A, to: VIP4, timeout: 115, deltaTime: 2, id: 42 }),
  });
});

Deno.test("tokenizeSaveLine() reads the -o save form, where unreplied means no SEEN_REPLY", () => {
  const save = (status: string, extra = "") =>
    `-A -t 98 -u ${status}${extra} -s 198.51.100.2 -d 192.0.2.10 -r 192.0.2.10 ` +
    `-q 198.51.100.2 -p tcp --sport 40000 --dport 80 --reply-port-src 80 ` +
    `--reply-port-dst 40000 --state SYN_SENT`;
  const expected = candidate({ from: V4_A, to: VIP4, timeout: 98 });
  assert.deepEqual(tokenizeAnyForm(save("UNSET")), { kind: "candidate", candidate: expected });
  assert.deepEqual(tokenizeAnyForm(save("ASSURED")), { kind: "candidate", candidate: expected });
  assert.equal(tokenizeAnyForm(save("SEEN_REPLY")), OTHER_LINE);
  assert.equal(tokenizeAnyForm(save("ASSURED,SEEN_REPLY")), OTHER_LINE);
  const zoned = tokenizeAnyForm(save("UNSET", " -w 7 --orig-zone 3 --reply-zone 4"));
  assert.deepEqual(zoned, {
    kind: "candidate",
    candidate: candidate({ from: V4_A, to: VIP4, timeout: 98, zone: 7, origZone: 3, replyZone: 4 }),
  });
});

Deno.test("tokenizeLine() reports a -o save line as malformed: the agent never lists in that form", () => {
  const line = "-A -t 98 -u UNSET -s 198.51.100.2 -d 192.0.2.10 -r 192.0.2.10 -q 198.51.100.2 " +
    "-p tcp --sport 40000 --dport 80 --reply-port-src 80 --reply-port-dst 40000 --state SYN_SENT";
  assert.equal(tokenizeAnyForm(line).kind, "candidate");
  assert.deepEqual(tokenizeLine(line), {
    kind: "malformed",
    reason: "the -o save form is not read by the agent",
  });
});

Deno.test("tokenizeLine() tells an icmp tuple's id= from the entry's id=", () => {
  const icmp = (tupleId: string, entryId: string) =>
    `icmp     1 27 src=198.51.100.2 dst=192.0.2.10 type=8 code=0 id=${tupleId} [UNREPLIED] ` +
    `src=192.0.2.10 dst=198.51.100.2 type=0 code=0 id=${tupleId} mark=0 use=1 id=${entryId}`;
  assert.equal(tokenizeLine(icmp("4242", "1813031587")), OTHER_LINE);
  // An icmp id is 16 bits, an entry id 32 bits: each limit applies to its own id=.
  assert.deepEqual(tokenizeLine(icmp("70000", "1813031587")), {
    kind: "malformed",
    reason: 'bad number "70000" in id=',
  });
  assert.deepEqual(tokenizeLine(icmp("4242", "4294967296")), {
    kind: "malformed",
    reason: 'bad number "4294967296" in id=',
  });
});

Deno.test("tokenizeLine() makes candidates only of TCP SYN_SENT entries flagged [UNREPLIED]", () => {
  const tuple = "src=198.51.100.2 dst=192.0.2.10 sport=40000 dport=80";
  const reply = "src=192.0.2.10 dst=198.51.100.2 sport=80 dport=40000 mark=0 use=1";
  const others = [
    `tcp      6 116 SYN_SENT ${tuple} ${reply}`,
    `tcp      6 60 SYN_RECV ${tuple} [UNREPLIED] ${reply}`,
    `tcp      6 120 SYN_SENT2 ${tuple} [UNREPLIED] ${reply}`,
    `udp      17 28 ${tuple} [UNREPLIED] ${reply}`,
    `udplite  136 28 ${tuple} [UNREPLIED] ${reply}`,
    `sctp     132 28 COOKIE_WAIT ${tuple} [UNREPLIED] ${reply}`,
    `dccp     33 28 REQUEST ${tuple} [UNREPLIED] ${reply}`,
    `    [NEW] tcp      6 120 SYN_SENT ${tuple} [UNREPLIED] ${reply}`,
  ];
  for (const line of others) assert.equal(tokenizeLine(line), OTHER_LINE, line);
  assert.equal(
    tokenizeLine(`tcp      6 116 SYN_SENT ${tuple} [UNREPLIED] ${reply}`).kind,
    "candidate",
  );
});

Deno.test("tokenizeLine() answers blank lines and conntrack's summary with the shared OTHER_LINE", () => {
  assert.ok(Object.isFrozen(OTHER_LINE));
  for (
    const line of [
      "",
      "   ",
      "\r",
      "conntrack v1.4.7 (conntrack-tools): 8 flow entries have been shown.",
    ]
  ) {
    assert.equal(tokenizeLine(line), OTHER_LINE, JSON.stringify(line));
  }
});

/** Variations of a line: spacing, out-of-range numbers, a token dropped, two tokens swapped. */
/** Numbers at and past the limits of 16-bit, 32-bit and exact (2^53) fields, and malformed ones. */
const NUMBER_EDGES = [
  "0",
  "00",
  "065",
  "65535",
  "65536",
  "999999999",
  "1000000000",
  "4294967295",
  "4294967296",
  "9007199254740991",
  "9007199254740992",
  "12345678901234567",
  "x",
];

function mutations(line: string): string[] {
  const tokens = line.split(" ");
  const out = [line, line.replaceAll(" ", "  "), line.replace(/ (use|mark)=\d+/, "")];
  for (let n = 0; n < tokens.length; n++) {
    out.push([...tokens.slice(0, n), ...tokens.slice(n + 1)].join(" "));
    if (n + 1 < tokens.length) {
      const swapped = [...tokens];
      [swapped[n], swapped[n + 1]] = [swapped[n + 1] ?? "", swapped[n] ?? ""];
      out.push(swapped.join(" "));
    }
    const token = tokens[n] ?? "";
    out.push([...tokens.slice(0, n), `${token}]`, ...tokens.slice(n + 1)].join(" "));
    // Each number, the timer included, at and past the edges of every range a field has.
    if (/(^|=)\d+$/.test(token)) {
      for (const value of NUMBER_EDGES) {
        out.push(
          [...tokens.slice(0, n), token.replace(/\d+$/, value), ...tokens.slice(n + 1)].join(" "),
        );
      }
    }
  }
  return out;
}

Deno.test("tokenizeLine() gives the same result as tokenizeLineByFields() on every variation", () => {
  let compared = 0;
  let wellFormed = 0;
  for (const entry of Deno.readDirSync(FIXTURES)) {
    if (!entry.name.startsWith("conntrack-")) continue;
    for (const line of fixtureLines(entry.name)) {
      for (const variant of mutations(line)) {
        const byFields: ParsedLine = tokenizeLineByFields(variant);
        assert.deepEqual(tokenizeLine(variant), byFields, variant);
        compared++;
        if (byFields.kind !== "malformed") wellFormed++;
      }
    }
  }
  // The comparison means something only if both kinds of result occur often.
  assert.ok(compared > 3000 && wellFormed > 500, `${compared} compared, ${wellFormed} well formed`);
});
