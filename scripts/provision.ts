/**
 * `pnpm test`'s `pretest` step: makes sure the Debian packages the test suite runs
 * (tshark, iasl, mkfs.ext4/e2fsck/debugfs, fallocate, Chromium) are installed, and that
 * apt knows the i386 architecture (the v86 boot tests download Debian's i386 kernel,
 * busybox and SeaBIOS with `apt-get download`).
 *
 * On a fresh Debian machine, as root, it installs what is missing with `apt-get`. When it
 * cannot (not root, or no apt), it prints one message naming the packages and the command,
 * and exits 1 before any test runs. When everything is there it prints nothing and
 * returns at once.
 *
 * @module
 */

import { spawnSync } from "node:child_process";
import { accessSync, constants } from "node:fs";
import { delimiter, join, resolve } from "node:path";
import { pathToFileURL } from "node:url";

/** A command the tests run, and the Debian package that provides it. */
export interface Requirement {
  /** The command looked up on `PATH` (plus `/usr/sbin` and `/sbin`). */
  readonly command: string;
  /** The Debian package that installs it. */
  readonly pkg: string;
  /** Which tests need it. */
  readonly why: string;
}

/** Every command the test suite runs, with its Debian package. */
export const REQUIREMENTS: readonly Requirement[] = [
  { command: "tshark", pkg: "tshark", why: "pcap checks (virtio-net, v86 boot tests)" },
  { command: "iasl", pkg: "acpica-tools", why: "ACPI SSDT checks (@pvkit/v86)" },
  { command: "mkfs.ext4", pkg: "e2fsprogs", why: "ext4 on virtio-blk" },
  { command: "e2fsck", pkg: "e2fsprogs", why: "ext4 on virtio-blk" },
  { command: "debugfs", pkg: "e2fsprogs", why: "ext4 on virtio-blk" },
  { command: "fallocate", pkg: "util-linux", why: "sparse file disks" },
  { command: "chromium", pkg: "chromium", why: "the browser example" },
  { command: "qemu-img", pkg: "qemu-utils", why: "qcow2 interop checks (@pvkit/virtio-blk)" },
  { command: "gcc", pkg: "gcc", why: "the v86 guest's random-I/O tool (@pvkit/v86 tests, bench)" },
];

/** What the machine has, as far as provisioning cares. */
export interface MachineState {
  /** Commands from {@link REQUIREMENTS} that were found. */
  readonly found: ReadonlySet<string>;
  /** Running as root (uid 0). */
  readonly root: boolean;
  /** `apt-get` and `dpkg` exist (a Debian-like machine). */
  readonly apt: boolean;
  /** apt's native architecture and foreign architectures include i386. */
  readonly i386: boolean;
}

/** What provisioning will do, or why it cannot. */
export type ProvisionPlan =
  | { readonly kind: "ready" }
  | {
      readonly kind: "install";
      /** Debian packages to install (sorted, unique). */
      readonly packages: readonly string[];
      /** Whether `dpkg --add-architecture i386` is needed first. */
      readonly addI386: boolean;
      /** The shell commands, in order. */
      readonly commands: readonly string[];
    }
  | {
      readonly kind: "cannot";
      /** Debian packages that are missing (sorted, unique). */
      readonly packages: readonly string[];
      /** The one message for the user: what is missing, and the command to run. */
      readonly message: string;
    };

/**
 * Decides what to do on a machine in `state`. Pure, so that it is tested on fabricated
 * machines.
 *
 * @param state - what the machine has
 * @returns `ready`, the `install` steps, or `cannot` with the message to print
 */
export function planProvision(state: MachineState): ProvisionPlan {
  const packages = [
    ...new Set(REQUIREMENTS.filter((r) => !state.found.has(r.command)).map((r) => r.pkg)),
  ].sort();
  const addI386 = !state.i386;
  if (packages.length === 0 && !addI386) return { kind: "ready" };
  const commands = [
    ...(addI386 ? ["dpkg --add-architecture i386"] : []),
    "apt-get update -q",
    ...(packages.length > 0
      ? [
          `DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends ${packages.join(" ")}`,
        ]
      : []),
  ];
  if (state.root && state.apt) return { kind: "install", packages, addI386, commands };
  const missing = [
    ...packages.map((p) => {
      const needs = REQUIREMENTS.filter((r) => r.pkg === p);
      return `  ${p} (${[...new Set(needs.map((r) => r.why))].join("; ")})`;
    }),
    ...(addI386
      ? ["  the i386 architecture in apt (Debian's i386 kernel for the v86 boot tests)"]
      : []),
  ];
  const how = state.apt
    ? `Run as root, then \`pnpm test\` again:\n  ${commands.map((c) => (c.startsWith("DEBIAN") ? `sudo env ${c}` : `sudo ${c}`)).join(" && \\\n  ")}`
    : "This machine has no apt-get: pvkit's test suite needs a Debian (or Debian-based) machine, or these packages from your distribution.";
  return {
    kind: "cannot",
    packages,
    message: `pvkit: the test suite needs what this machine lacks:\n${missing.join("\n")}\n${how}`,
  };
}

/** Looks `command` up on `PATH` and in the sbin directories (not on a user's `PATH`). */
function hasCommand(command: string): boolean {
  const dirs = [...(process.env.PATH ?? "").split(delimiter), "/usr/sbin", "/sbin"];
  return dirs.some((dir) => {
    if (dir === "") return false;
    try {
      accessSync(join(dir, command), constants.X_OK);
      return true;
    } catch {
      return false;
    }
  });
}

/** The output of a command, or undefined when it cannot run. */
function output(command: string, args: readonly string[]): string | undefined {
  const r = spawnSync(command, args, { encoding: "utf8" });
  return r.status === 0 ? r.stdout : undefined;
}

/** Reads the state of this machine. */
export function currentState(): MachineState {
  const native = output("dpkg", ["--print-architecture"])?.trim();
  const foreign = output("dpkg", ["--print-foreign-architectures"])?.split(/\s+/) ?? [];
  return {
    found: new Set(REQUIREMENTS.map((r) => r.command).filter(hasCommand)),
    root: process.getuid?.() === 0,
    apt: hasCommand("apt-get") && native !== undefined,
    i386: native === "i386" || foreign.includes("i386"),
  };
}

/** Runs one step through the shell, streaming its output; `apt-get update` may fail partly. */
function step(command: string): void {
  console.log(`pvkit: $ ${command}`);
  const r = spawnSync("sh", ["-c", command], { stdio: "inherit" });
  if (r.status === 0) return;
  // A mirror mid-sync makes `apt-get update` exit 100 although the lists it needs
  // arrived; the install that follows says whether they did.
  if (command.startsWith("apt-get update")) {
    console.warn("pvkit: apt-get update reported errors; going on with the lists it fetched");
    return;
  }
  throw new Error(`pvkit: \`${command}\` failed (exit ${r.status ?? r.signal})`);
}

/** Provisions this machine; returns the process exit code. */
export function main(): number {
  const plan = planProvision(currentState());
  if (plan.kind === "ready") return 0;
  if (plan.kind === "cannot") {
    console.error(plan.message);
    return 1;
  }
  console.log(
    `pvkit: installing what the tests need: ${[...plan.packages, ...(plan.addI386 ? ["i386 architecture"] : [])].join(", ")}`,
  );
  for (const command of plan.commands) step(command);
  const after = planProvision(currentState());
  if (after.kind !== "ready") {
    console.error(`pvkit: apt-get finished, but still missing: ${after.packages.join(", ")}`);
    return 1;
  }
  return 0;
}

if (
  process.argv[1] !== undefined &&
  import.meta.url === pathToFileURL(resolve(process.argv[1])).href
) {
  process.exit(main());
}
