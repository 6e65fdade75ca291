/**
 * The browser example: it bundles for the browser from the workspace sources with no
 * Node built-in, and the page, served from 127.0.0.1 (Chromium refuses module scripts
 * from file://) and opened in Debian's headless Chromium, runs the virtio-blk guest and
 * shows its result in the DOM.
 */

import { execFile } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { extname, join, normalize } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { buildBrowserExample } from "../browser/build.js";
import type { BrowserResult } from "../browser/main.js";

const CHROMIUM = "/usr/bin/chromium";
const scratch = mkdtempSync(join(tmpdir(), "pvkit-browser-test-"));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

const TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".map": "application/json",
};

/** Serves `dir` on 127.0.0.1 (a free port); records the paths asked for. */
async function serve(dir: string): Promise<{ server: Server; url: string; requested: string[] }> {
  const requested: string[] = [];
  const server = createServer((req, res) => {
    const path = normalize(decodeURIComponent(new URL(req.url ?? "/", "http://x").pathname));
    requested.push(path);
    const file = join(dir, path === "/" ? "index.html" : path);
    if (!file.startsWith(dir) || !existsSync(file)) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { "content-type": TYPES[extname(file)] ?? "application/octet-stream" });
    res.end(readFileSync(file));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return { server, url: `http://127.0.0.1:${port}/index.html`, requested };
}

/** Opens `url` in headless Chromium and returns the DOM once the page settled. */
function dumpDom(url: string, profile: string): Promise<string> {
  const args = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    `--user-data-dir=${profile}`,
    // Let the page's asynchronous work finish before the DOM is dumped (without it the
    // DOM is taken at the load event, before the guest ran).
    "--virtual-time-budget=20000",
    "--dump-dom",
    url,
  ];
  return new Promise((resolve, reject) => {
    execFile(CHROMIUM, args, { timeout: 60_000, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`chromium failed: ${err.message}\n${stderr.slice(-2000)}`));
      else resolve(stdout);
    });
  });
}

describe("browser example", () => {
  it("bundles main.ts for the browser from the workspace sources, with no Node built-in", async () => {
    const built = await buildBrowserExample({ outdir: join(scratch, "bundle-only") });
    expect(
      built.inputs.some((p) => p.endsWith("packages/virtio-blk/src/driver/blk-driver.ts")),
    ).toBe(true);
    expect(built.inputs.filter((p) => p.startsWith("node:") || p.includes("@types/node"))).toEqual(
      [],
    );
    const bundle = readFileSync(join(built.outdir, "main.js"), "utf8");
    expect(bundle).not.toMatch(/from\s*["']node:/);
    expect(bundle).not.toMatch(/require\(\s*["']node:/);
  });

  it("refuses to build a page that imports a Node built-in", async () => {
    const entry = join(scratch, "uses-node.ts");
    writeFileSync(entry, 'import { readFileSync } from "node:fs";\nconsole.log(readFileSync);\n');
    await expect(buildBrowserExample({ entry, outdir: join(scratch, "refused") })).rejects.toThrow(
      /imports Node built-ins: node:fs/,
    );
  });

  it("runs in headless Chromium and shows its result in the DOM", {
    timeout: 120_000,
  }, async () => {
    if (!existsSync(CHROMIUM)) {
      throw new Error(
        `${CHROMIUM} is missing: the browser example test needs Debian's "chromium" package ` +
          "(apt-get install chromium). `pnpm test` installs it in its pretest step.",
      );
    }
    const built = await buildBrowserExample({ outdir: join(scratch, "site") });
    const { server, url, requested } = await serve(built.outdir);
    let dom: string;
    try {
      dom = await dumpDom(url, join(scratch, "profile"));
    } finally {
      server.close();
    }
    expect(requested).toContain("/main.js");
    const result = /<pre id="result">([^<]*)<\/pre>/.exec(dom)?.[1];
    expect(result, `no #result in the page:\n${dom}`).toBeDefined();
    expect(result).not.toBe("running…");
    const parsed = JSON.parse(result!) as BrowserResult;
    expect(parsed).toMatchObject({ ok: true, memory: "WebAssembly.Memory", bytes: 8192 });
    expect(parsed.error).toBeUndefined();
    expect(parsed.exits).toBeGreaterThan(0);
    expect(parsed.interrupts).toBeGreaterThan(0);
    expect(/<title>([^<]*)<\/title>/.exec(dom)?.[1]).toBe("pvkit: ok");
  });
});
