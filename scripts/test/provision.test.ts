import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { currentState, type MachineState, planProvision, REQUIREMENTS } from "../provision.js";

const everything = new Set(REQUIREMENTS.map((r) => r.command));

function machine(over: Partial<MachineState>): MachineState {
  return { found: everything, root: true, apt: true, i386: true, ...over };
}

function without(...commands: string[]): Set<string> {
  return new Set([...everything].filter((c) => !commands.includes(c)));
}

describe("pnpm test's provisioning (scripts/provision.ts)", () => {
  it("does nothing on a machine that has everything", () => {
    expect(planProvision(machine({}))).toEqual({ kind: "ready" });
    expect(planProvision(machine({ root: false, apt: false }))).toEqual({ kind: "ready" });
  });

  it("as root with apt: adds i386, updates, installs each missing package once", () => {
    const plan = planProvision(
      machine({ found: without("tshark", "e2fsck", "debugfs"), i386: false }),
    );
    expect(plan).toEqual({
      kind: "install",
      packages: ["e2fsprogs", "tshark"],
      addI386: true,
      commands: [
        "dpkg --add-architecture i386",
        "apt-get update -q",
        "DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends e2fsprogs tshark",
      ],
    });
  });

  it("only the i386 architecture missing: no install step", () => {
    const plan = planProvision(machine({ i386: false }));
    expect(plan.kind === "install" && plan.commands).toEqual([
      "dpkg --add-architecture i386",
      "apt-get update -q",
    ]);
  });

  it("not root: one message naming each package, what needs it, and the sudo command", () => {
    const plan = planProvision(machine({ root: false, found: without("iasl", "chromium") }));
    expect(plan.kind).toBe("cannot");
    if (plan.kind !== "cannot") return;
    expect(plan.packages).toEqual(["acpica-tools", "chromium"]);
    expect(plan.message).toContain("acpica-tools (ACPI SSDT checks (@pvkit/v86))");
    expect(plan.message).toContain("chromium (the browser example)");
    expect(plan.message).toContain(
      "sudo apt-get update -q && \\\n  sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends acpica-tools chromium",
    );
    expect(plan.message).toContain("then `pnpm test` again");
  });

  it("no apt: says the suite needs a Debian machine instead of printing apt commands", () => {
    const plan = planProvision(machine({ apt: false, found: without("tshark") }));
    expect(plan.kind === "cannot" && plan.message).toMatch(/no apt-get.*Debian/);
    expect(plan.kind === "cannot" && plan.message).not.toContain("apt-get install");
  });

  it("on this machine, after `pnpm test`'s pretest step, everything is there", () => {
    // The pretest step ran before this suite: it must have left the machine ready, and the
    // script run again exits 0 and prints nothing.
    expect(planProvision(currentState())).toEqual({ kind: "ready" });
    const script = fileURLToPath(new URL("../provision.ts", import.meta.url));
    const r = spawnSync(process.execPath, ["--import", "tsx", script], { encoding: "utf8" });
    expect(r.status).toBe(0);
    expect(r.stdout + r.stderr).toBe("");
  });
});
