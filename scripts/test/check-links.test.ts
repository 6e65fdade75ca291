import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { checkLinks } from "../check-links.js";

let dir: string | undefined;
afterEach(() => {
  if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  dir = undefined;
});

function site(files: Record<string, string>): string {
  dir = mkdtempSync(join(tmpdir(), "pvkit-links-"));
  for (const [path, text] of Object.entries(files)) {
    mkdirSync(join(dir, path, ".."), { recursive: true });
    writeFileSync(join(dir, path), text);
  }
  return dir;
}

describe("the API reference's link check (scripts/check-links.ts)", () => {
  it("accepts links to existing pages, assets and anchors; counts external links", () => {
    const root = site({
      "index.html":
        '<a href="classes/Bus.html#read">x</a><a href="#top">t</a><img src="assets/a.svg">' +
        '<a href="https://example.org/">e</a><div id="top"></div>',
      "classes/Bus.html": '<h3 id="read">read</h3><a href="../index.html">up</a>',
      "assets/a.svg": "<svg/>",
    });
    expect(checkLinks(root)).toEqual({ pages: 2, checked: 4, external: 1, broken: [] });
  });

  it("does not check fragments of TypeDoc's script-built hierarchy page, only that it exists", () => {
    const root = site({
      "index.html":
        '<a href="hierarchy.html#@pvkit/platform.Emitter">h</a><a href="gone.html#x">g</a>',
      "hierarchy.html": "<div></div>",
    });
    expect(checkLinks(root).broken).toEqual([
      { page: "index.html", link: "gone.html#x", reason: "no such file" },
    ]);
  });

  it("reports a missing page, a missing anchor and a link out of the site", () => {
    const root = site({
      "index.html":
        '<a href="classes/Gone.html">g</a><a href="classes/Bus.html#write">w</a>' +
        '<a href="../../etc/passwd">o</a>',
      "classes/Bus.html": '<h3 id="read">read</h3>',
    });
    expect(checkLinks(root).broken).toEqual([
      { page: "index.html", link: "classes/Gone.html", reason: "no such file" },
      { page: "index.html", link: "classes/Bus.html#write", reason: 'no element with id "write"' },
      { page: "index.html", link: "../../etc/passwd", reason: "points outside the site" },
    ]);
  });
});
