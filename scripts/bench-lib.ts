/**
 * Helpers for `scripts/bench-agent.ts`: a deterministic generator of realistic app trees (seeded
 * PRNG, many small text files, some medium, a few large, a share of incompressible bytes), and the
 * measurement of child processes (wall time, peak RSS).
 */
import * as fs from "node:fs";
import { dirname, join } from "node:path";

/** mulberry32: small, fast and good enough to make test data reproducible. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Incompressible bytes (xorshift32, seeded). */
export function randomBytes(seed: number, size: number): Uint8Array {
  const words = new Uint32Array(Math.ceil(size / 4));
  let x = seed >>> 0 || 0x9e3779b9;
  for (let i = 0; i < words.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    words[i] = x >>> 0;
  }
  return new Uint8Array(words.buffer, 0, size);
}

const SYLLABLES =
  "ba be bi bo bu ca co cu da de di do fa fe fi fo ga ge go ha he hi ho ja ka ke ki ko la le li lo lu ma me mi mo mu na ne ni no nu pa pe pi po pu ra re ri ro ru sa se si so su ta te ti to tu va ve vi vo wa we xo ya yo za ze zo".split(
    " ",
  );
const KEYWORDS = [
  "const",
  "let",
  "return",
  "function",
  "export",
  "import",
  "async",
  "await",
  "this",
  "new",
  "if",
  "else",
  "for",
  "of",
  "null",
  "undefined",
  "true",
  "false",
  "typeof",
  "default",
];

/**
 * Text that compresses like real source code (gzip -6 ≈ 4x): JS, JSON and CSS lines built from a
 * Zipf-like vocabulary, with numbers, hex colours and hashes for entropy.
 */
export function makeCorpus(seed: number, size: number): Uint8Array {
  const rnd = prng(seed);
  const pick = <T>(xs: readonly T[]) => xs[Math.floor(rnd() * xs.length)]!;
  const vocab: string[] = [];
  for (let i = 0; i < 1500; i++) {
    let w = "";
    const n = 2 + Math.floor(rnd() * 3);
    for (let j = 0; j < n; j++) w += pick(SYLLABLES);
    if (rnd() < 0.4) w += pick(SYLLABLES).toUpperCase()[0] + pick(SYLLABLES);
    vocab.push(w);
  }
  // Skewed: a few identifiers are everywhere, most are rare.
  const id = () => vocab[Math.floor(vocab.length * rnd() ** 6)]!;
  const num = () => String(Math.floor(rnd() ** 4 * 2000));
  const hex = (n: number) =>
    Math.floor(rnd() * 16 ** n)
      .toString(16)
      .padStart(n, "0");
  const words = (n: number) => Array.from({ length: n }, id).join(" ");
  const lines: string[] = [];
  let len = 0;
  let indent = 0;
  while (len < size) {
    const pad = "  ".repeat(indent);
    let line: string;
    const r = rnd();
    if (r < 0.22) line = `${pad}const ${id()} = await ${id()}.${id()}(${id()}, { timeout: ${num()} });`;
    else if (r < 0.32)
      line = `${pad}${pick(KEYWORDS)} ${id()}${rnd() < 0.5 ? `.${id()}` : ""} = ${pick(KEYWORDS)} ${id()}(${id()});`;
    else if (r < 0.42 && indent < 6) {
      line = `${pad}if (${id()}.${id()} ${pick(["===", "!==", "<", ">="])} ${num()}) {`;
      indent++;
    } else if (r < 0.52 && indent > 0) {
      indent--;
      line = `${"  ".repeat(indent)}}`;
    } else if (r < 0.62) line = `${pad}// ${words(3 + Math.floor(rnd() * 8))}`;
    else if (r < 0.72) line = `${pad}"${id()}": "${words(1 + Math.floor(rnd() * 4))}",`;
    else if (r < 0.8)
      line = `.${id()}-${id()} { margin: ${num()}px ${num()}px; color: #${hex(1).repeat(3)}; padding: 0 ${num()}px; }`;
    else if (r < 0.81)
      line = `${pad}"integrity": "sha512-${Buffer.from(randomBytes(Math.floor(rnd() * 2 ** 32), 24)).toString("base64")}",`;
    else line = `${pad}return ${id()}[${JSON.stringify(id())}] ?? ${id()}(${num()}, ${id()});`;
    lines.push(line);
    len += line.length + 1;
  }
  return new TextEncoder().encode(`${lines.join("\n")}\n`).subarray(0, size);
}

export interface AppSpec {
  files: number;
  bytes: number;
  /** Share of the bytes that is random (images, fonts, wasm). */
  randomShare: number;
  seed: number;
  /** Share of the files that version 2 changes (content and mtime). */
  changeShare: number;
}

/**
 * The benchmark app every bench script generates from its flags (`--files`, `--size-mb`, `--seed`):
 * 10% of its bytes random, `changeShare` of its files changed in version 2.
 */
export function benchApp(flags: { files: string; "size-mb": string; seed: string }, changeShare: number): AppSpec {
  return {
    files: Number(flags.files),
    bytes: Number(flags["size-mb"]) * 1e6,
    randomShare: 0.1,
    seed: Number(flags.seed),
    changeShare,
  };
}

interface FileSpec {
  path: string;
  size: number;
  random: boolean;
  mtime: number;
  /** Version 2 changes this file. */
  changed: boolean;
}

const TEXT_EXT = {
  small: ["js", "js", "js", "ts", "json", "md", "css", "d.ts", "html", "yml"],
  medium: ["js", "js", "map", "css", "json"],
  large: ["js", "map"],
};
const BIN_EXT = { small: ["png", "svg.gz", "ico"], medium: ["png", "jpg", "woff2"], large: ["wasm", "jpg", "node"] };
const BASE_MTIME = 1_700_000_000;

/**
 * The file list: ~0.1% large files (1–8 MB before scaling), ~2.5% medium (64 KB–1 MB), the rest
 * small (log-normal around 2.5 KB); each class is scaled to its share of the total (30/35/35%).
 */
export function planApp(spec: AppSpec): FileSpec[] {
  const rnd = prng(spec.seed);
  const normal = () => Math.sqrt(-2 * Math.log(1 - rnd())) * Math.cos(2 * Math.PI * rnd());
  const large = Math.max(2, Math.round(spec.files * 0.001));
  const medium = Math.max(4, Math.round(spec.files * 0.025));
  const small = spec.files - large - medium;
  const classes = [
    { name: "small" as const, count: small, share: 0.35, raw: () => 2500 * Math.exp(normal()) },
    { name: "medium" as const, count: medium, share: 0.35, raw: () => 65536 * 16 ** rnd() },
    { name: "large" as const, count: large, share: 0.3, raw: () => 2 ** 20 * 8 ** rnd() },
  ];

  // Directories: a tree whose early (shallow) directories get most of the children.
  const dirs: { path: string; depth: number }[] = [{ path: "", depth: 0 }];
  for (const top of ["app", "public/assets", "vendor", "node_modules", "config", "lib", "views"])
    dirs.push({ path: top, depth: 1 });
  const ident = () =>
    SYLLABLES[Math.floor(rnd() * SYLLABLES.length)]! +
    SYLLABLES[Math.floor(rnd() * SYLLABLES.length)]! +
    (rnd() < 0.5 ? SYLLABLES[Math.floor(rnd() * SYLLABLES.length)]! : "");
  const ndirs = Math.max(8, Math.round(spec.files / 14));
  while (dirs.length < ndirs) {
    const parent = dirs[Math.floor(rnd() ** 1.5 * dirs.length)]!;
    if (parent.depth >= 7) continue;
    dirs.push({ path: join(parent.path, ident()), depth: parent.depth + 1 });
  }

  const files: FileSpec[] = [];
  const seen = new Set<string>();
  for (const c of classes) {
    const raws = Array.from({ length: c.count }, c.raw);
    const scale = (spec.bytes * c.share) / raws.reduce((a, b) => a + b, 0);
    for (const raw of raws) {
      let path: string;
      do {
        const dir = dirs[1 + Math.floor(rnd() * (dirs.length - 1))]!.path;
        path = join(
          dir,
          `${ident()}${Math.floor(rnd() * 100)}.${TEXT_EXT[c.name][Math.floor(rnd() * TEXT_EXT[c.name].length)]}`,
        );
      } while (seen.has(path));
      seen.add(path);
      files.push({
        path,
        size: Math.max(1, Math.round(raw * scale)),
        random: false,
        mtime: BASE_MTIME + Math.floor(rnd() * 30_000_000),
        changed: false,
      });
    }
  }

  // Random content: walk the files in a shuffled order, taking some until the share is reached.
  const order = files.map((_, i) => i);
  for (let i = order.length - 1; i > 0; i--) {
    const j = Math.floor(rnd() * (i + 1));
    [order[i], order[j]] = [order[j]!, order[i]!];
  }
  const target = spec.bytes * spec.randomShare;
  let random = 0;
  for (const pass of [0.15, 1]) {
    for (const i of order) {
      const f = files[i]!;
      if (f.random || random + f.size > target || rnd() >= pass) continue;
      f.random = true;
      random += f.size;
    }
  }
  for (const f of files) {
    if (!f.random) continue;
    const cls = f.size >= 2 ** 20 ? "large" : f.size >= 65536 ? "medium" : "small";
    f.path = f.path.replace(/\.[a-z.]+$/, `.${BIN_EXT[cls][Math.floor(rnd() * BIN_EXT[cls].length)]}`);
  }
  for (let k = 0; k < Math.round(spec.files * spec.changeShare); k++)
    files[order[(k * 7919) % order.length]!]!.changed = true;
  return files;
}

/** Write version 1 or 2 of the app into `root` (which must not exist). Returns the plan. */
export function writeApp(root: string, spec: AppSpec, version: 1 | 2): FileSpec[] {
  const files = planApp(spec);
  const corpus = makeCorpus(spec.seed + 1, 16 * 2 ** 20);
  const rnd = prng(spec.seed + 2);
  const madeDirs = new Set<string>();
  for (const [i, f] of files.entries()) {
    const v2 = version === 2 && f.changed;
    const dir = dirname(join(root, f.path));
    if (!madeDirs.has(dir)) {
      fs.mkdirSync(dir, { recursive: true });
      madeDirs.add(dir);
    }
    // Draw from the PRNG the same way for both versions, so unchanged files stay identical.
    const off = Math.floor(rnd() * corpus.length);
    const size = v2 ? f.size + 1 + (i % 97) : f.size;
    const data = f.random
      ? randomBytes(spec.seed * 1_000_003 + i * 2 + (v2 ? 1 : 0), size)
      : sliceWrapped(corpus, v2 ? (off + corpus.length / 2) % corpus.length : off, size);
    const path = join(root, f.path);
    fs.writeFileSync(path, data);
    const mtime = v2 ? f.mtime + 86_400 * 30 : f.mtime;
    fs.utimesSync(path, mtime, mtime);
  }
  // Directory times last, deepest first, so that tar and rsync see the same tree every time.
  for (const dir of [...madeDirs, root].sort((a, b) => b.length - a.length)) {
    for (let d = dir; d.length >= root.length; d = dirname(d)) fs.utimesSync(d, BASE_MTIME, BASE_MTIME);
  }
  return files;
}

function sliceWrapped(corpus: Uint8Array, off: number, size: number): Uint8Array {
  off = Math.floor(off);
  if (off + size <= corpus.length) return corpus.subarray(off, off + size);
  const out = new Uint8Array(size);
  let n = 0;
  while (n < size) {
    const part = corpus.subarray(off, Math.min(corpus.length, off + size - n));
    out.set(part, n);
    n += part.length;
    off = 0;
  }
  return out;
}

export interface Measured {
  seconds: number;
  /** Peak RSS of the process itself (VmHWM, polled), bytes; 0 if not polled. */
  peakRss: number;
  /** The largest anonymous and file-backed parts of its RSS seen while polling, bytes. */
  peakAnon: number;
  peakFile: number;
  /** The largest peak RSS of any descendant seen while polling (rsync, for the agent), bytes. */
  peakChildRss: number;
  /** User + system CPU time of the process and its waited-for descendants, seconds. */
  cpuSeconds: number;
  /**
   * Bytes the process and its waited-for descendants wrote to files on block devices (`write_bytes`
   * of /proc/PID/io: page-cache pages dirtied, counted at write time), and the part of it that was
   * truncated or deleted while still dirty (`cancelled_write_bytes`), so never written back.
   */
  writeBytes: number;
  cancelledWriteBytes: number;
  stdout: string;
  stderr: string;
}

/**
 * `write_bytes` and `cancelled_write_bytes` of this process: Linux adds a reaped child's counters
 * (which hold those of the children it reaped in turn) to the reaper's, so the difference across a
 * `measure` is the I/O of the measured process tree, provided this process writes no files meanwhile
 * and runs no other child.
 */
export function selfIo(): { write: number; cancelled: number } {
  const text = fs.readFileSync("/proc/self/io", "latin1");
  const field = (name: string) => Number(new RegExp(`^${name}: (\\d+)$`, "m").exec(text)?.[1] ?? NaN);
  return { write: field("write_bytes"), cancelled: field("cancelled_write_bytes") };
}

/**
 * Run a command to completion and measure its wall time and disk writes (see `selfIo`). `pollRss` polls
 * /proc/PID/status of the process every few ms and of its descendants every 50 ms: VmHWM only grows, so its last
 * reading is the peak up to then. (wait4's ru_maxrss is no use here: it counts the spawning process's memory before
 * `exec`.)
 */
export async function measure(
  cmd: string[],
  opts: { stdin?: string; env?: Record<string, string | undefined>; pollRss?: boolean; cwd?: string } = {},
): Promise<Measured> {
  const ioBefore = selfIo();
  const started = performance.now();
  const proc = Bun.spawn(cmd, {
    stdin: opts.stdin === undefined ? "ignore" : new TextEncoder().encode(opts.stdin),
    stdout: "pipe",
    stderr: "pipe",
    env: opts.env,
    cwd: opts.cwd,
  });
  const peak = { rss: 0, anon: 0, file: 0, child: 0 };
  let polls = 0;
  const poll = () => {
    const text = readProc(`/proc/${proc.pid}/status`);
    if (text === undefined) return;
    peak.rss = Math.max(peak.rss, kbField(text, "VmHWM"));
    peak.anon = Math.max(peak.anon, kbField(text, "RssAnon"));
    peak.file = Math.max(peak.file, kbField(text, "RssFile"));
    // Children live for seconds (rsync): look for them less often, to leave the CPU to the measured.
    if (polls++ % 10 === 0)
      for (const pid of descendants(proc.pid))
        peak.child = Math.max(peak.child, kbField(readProc(`/proc/${pid}/status`) ?? "", "VmHWM"));
  };
  const timer = opts.pollRss ? setInterval(poll, 5) : undefined;
  const [stdout, stderr, code] = await Promise.all([
    new Response(proc.stdout).text(),
    new Response(proc.stderr).text(),
    proc.exited,
  ]);
  const seconds = (performance.now() - started) / 1000;
  clearInterval(timer);
  if (code !== 0)
    throw new Error(
      `${cmd.join(" ")} failed with exit code ${code}: ${stderr.trim().split("\n").slice(-3).join(" | ")}`,
    );
  const cpuSeconds = Number(proc.resourceUsage()?.cpuTime.total ?? 0n) / 1e6;
  const ioAfter = selfIo();
  const io = {
    writeBytes: ioAfter.write - ioBefore.write,
    cancelledWriteBytes: ioAfter.cancelled - ioBefore.cancelled,
  };
  return {
    seconds,
    peakRss: peak.rss,
    peakAnon: peak.anon,
    peakFile: peak.file,
    peakChildRss: peak.child,
    cpuSeconds,
    ...io,
    stdout,
    stderr,
  };
}

function readProc(path: string): string | undefined {
  try {
    return fs.readFileSync(path, "latin1");
  } catch {
    return undefined; // exited between polls
  }
}

function kbField(status: string, field: string): number {
  return Number(new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(status)?.[1] ?? 0) * 1024;
}

function descendants(pid: number): number[] {
  const out: number[] = [];
  for (const tid of listDir(`/proc/${pid}/task`)) {
    for (const child of (readProc(`/proc/${pid}/task/${tid}/children`) ?? "").split(" ").filter(Boolean).map(Number))
      out.push(child, ...descendants(child));
  }
  return out;
}

function listDir(path: string): string[] {
  try {
    return fs.readdirSync(path);
  } catch {
    return [];
  }
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

export async function sh(script: string, cwd?: string): Promise<string> {
  return (await measure(["sh", "-c", script], { cwd })).stdout;
}
