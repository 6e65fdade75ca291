/**
 * Checks the links of a generated HTML site (the API reference `pnpm docs` writes to
 * `docs/api`): every relative `href`/`src` must name a file of the site, and every
 * `#fragment` an element `id` (or `name`) in the page it points to. Links that leave the
 * site (`https:`, `mailto:`…) are counted, not fetched: this machine has no network.
 *
 * Usage: `tsx scripts/check-links.ts [dir]` (default `docs/api`); exits 1 on any broken link.
 *
 * @module
 */

import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join, relative, resolve, sep } from "node:path";
import { pathToFileURL } from "node:url";

/** One broken link. */
export interface BrokenLink {
  /** The page holding the link, relative to the site root. */
  readonly page: string;
  /** The link as written. */
  readonly link: string;
  /** What is wrong with it. */
  readonly reason: string;
}

/** What {@link checkLinks} found. */
export interface LinkReport {
  /** HTML pages read. */
  readonly pages: number;
  /** Links inside the site that were checked. */
  readonly checked: number;
  /** Links that leave the site (not fetched). */
  readonly external: number;
  /** The broken ones. */
  readonly broken: readonly BrokenLink[];
}

function htmlFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) return htmlFiles(path);
    return name.endsWith(".html") ? [path] : [];
  });
}

/**
 * Pages whose anchors a script fills in at load time, so their fragments cannot be checked
 * from the HTML: TypeDoc's class hierarchy (`hierarchy.html`, built by `assets/hierarchy.js`
 * from compressed data, with only part of the tree in the static page).
 */
function scriptFilled(file: string): boolean {
  return file.endsWith(`${sep}hierarchy.html`);
}

const ATTR = /\b(?:href|src)\s*=\s*"([^"]*)"/g;
const ID = /\b(?:id|name)\s*=\s*"([^"]*)"/g;

function decode(text: string): string {
  return text
    .replaceAll("&amp;", "&")
    .replaceAll("&quot;", '"')
    .replaceAll("&lt;", "<")
    .replaceAll("&gt;", ">");
}

/**
 * Checks every link of the HTML pages under `root`.
 *
 * @param root - the site's root directory
 * @returns the counts and the broken links
 */
export function checkLinks(root: string): LinkReport {
  const pages = htmlFiles(root);
  const ids = new Map<string, Set<string>>();
  const idsOf = (file: string): Set<string> => {
    let set = ids.get(file);
    if (set === undefined) {
      set = new Set([...readFileSync(file, "utf8").matchAll(ID)].map((m) => decode(m[1]!)));
      ids.set(file, set);
    }
    return set;
  };
  const broken: BrokenLink[] = [];
  let checked = 0;
  let external = 0;
  for (const page of pages) {
    const html = readFileSync(page, "utf8");
    for (const m of html.matchAll(ATTR)) {
      const link = decode(m[1]!);
      if (/^[a-z][a-z0-9+.-]*:/i.test(link) || link.startsWith("//")) {
        external++;
        continue;
      }
      checked++;
      const hash = link.indexOf("#");
      const pathPart = (hash < 0 ? link : link.slice(0, hash)).split("?")[0]!;
      const fragment = hash < 0 ? "" : decodeURIComponent(link.slice(hash + 1));
      const target = pathPart === "" ? page : resolve(dirname(page), decodeURIComponent(pathPart));
      const where = relative(root, page);
      if (relative(root, target).startsWith("..")) {
        broken.push({ page: where, link, reason: "points outside the site" });
      } else if (!existsSync(target) || statSync(target).isDirectory()) {
        broken.push({ page: where, link, reason: "no such file" });
      } else if (
        fragment !== "" &&
        target.endsWith(".html") &&
        !scriptFilled(target) &&
        !idsOf(target).has(fragment)
      ) {
        broken.push({ page: where, link, reason: `no element with id "${fragment}"` });
      }
    }
  }
  return { pages: pages.length, checked, external, broken };
}

if (
  process.argv[1] !== undefined &&
  import.meta.url === pathToFileURL(resolve(process.argv[1])).href
) {
  const root = resolve(process.argv[2] ?? "docs/api");
  if (!existsSync(root)) {
    console.error(`check-links: ${root} does not exist; run \`pnpm docs\` first`);
    process.exit(1);
  }
  const report = checkLinks(root);
  for (const b of report.broken) console.error(`broken: ${b.page}: ${b.link} (${b.reason})`);
  console.log(
    `check-links: ${report.pages} pages, ${report.checked} links inside the site checked, ` +
      `${report.broken.length} broken, ${report.external} external (not fetched)`,
  );
  process.exit(report.broken.length > 0 || report.pages === 0 ? 1 : 0);
}
